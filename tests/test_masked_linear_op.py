"""The registered ops (maskedbert::masked_linear_fwd / _bwd): torch.library.opcheck on CPU (CUDA in
the gpu tests), torch.compile(fullgraph=True) of a masked BERT matching eager, one argument check
per module, W*M kept from the forward, deterministic mode.
"""
from __future__ import annotations

import pytest
import torch

import maskedbert as mb
from maskedbert.kernels import masked_linear, pack_mask
from maskedbert.kernels import masked_linear_op  # noqa: F401  (registers the ops)

OPCHECK_TESTS = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")


def _fwd_args(device, path, source, dtype=torch.float32, keep=True, bias=True, M=5, N=7, K=11):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(M, K, generator=g).to(device, dtype).requires_grad_()
    w = torch.randn(N, K, generator=g).to(device, dtype).requires_grad_()
    b = torch.randn(N, generator=g).to(device, dtype).requires_grad_() if bias else None
    scores = mask = tau_t = None
    tau = 0.1
    if source == "scores":
        scores = torch.randn(N, K, generator=g).to(device).requires_grad_()
    elif source == "scores_tensor":
        scores = torch.randn(N, K, generator=g).to(device).requires_grad_()
        tau_t = torch.tensor(0.2, device=device)
    else:
        keep_mask = (torch.rand(N, K, generator=g) > 0.5).to(device)
        mask = keep_mask if source == "bool" else pack_mask(keep_mask, backend="torch")
    return (x, w, b, scores, mask, tau_t, tau, path, keep)


@pytest.mark.parametrize("source", ["scores", "scores_tensor", "bool", "packed"])
@pytest.mark.parametrize("keep", [True, False])
def test_opcheck_forward_torch_path(source, keep):
    args = _fwd_args("cpu", "torch", source, keep=keep)
    torch.library.opcheck(torch.ops.maskedbert.masked_linear_fwd.default, args, test_utils=OPCHECK_TESTS)


@pytest.mark.triton
@pytest.mark.parametrize("path", ["triton_dense", "triton_fused"])
@pytest.mark.parametrize("source", ["scores", "bool", "packed"])
def test_opcheck_forward_triton_paths(path, source):
    args = _fwd_args("cpu", path, source, M=4, N=6, K=10)
    torch.library.opcheck(torch.ops.maskedbert.masked_linear_fwd.default, args, test_utils=OPCHECK_TESTS)


@pytest.mark.parametrize("needs", [(True, True, True, True), (True, False, False, True), (False, True, True, False),
                                   (False, False, True, False)])
@pytest.mark.parametrize("path,ste", [("torch", "cublas"), pytest.param("triton_dense", "cublas", marks=pytest.mark.triton),
                                      pytest.param("triton_dense", "triton", marks=pytest.mark.triton)])
def test_opcheck_backward(needs, path, ste):
    g = torch.Generator().manual_seed(1)
    M, N, K = 5, 6, 9
    dy, x = torch.randn(M, N, generator=g), torch.randn(M, K, generator=g)
    w = torch.randn(N, K, generator=g)
    keep = torch.rand(N, K, generator=g) > 0.5
    mask = keep if path == "torch" else pack_mask(keep, backend="torch")
    dense = torch.where(keep, w, 0)
    args = (dy, x, w, mask, dense, path, ste, *needs)
    torch.library.opcheck(torch.ops.maskedbert.masked_linear_bwd.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["torch", "triton_dense", "triton_fused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_on_cuda(cuda_device, path, dtype):
    for source in ("scores", "scores_tensor", "packed"):
        args = _fwd_args(cuda_device, path, source, dtype=dtype, M=33, N=40, K=24)
        torch.library.opcheck(torch.ops.maskedbert.masked_linear_fwd.default, args, test_utils=OPCHECK_TESTS)


def _tiny_masked_bert(seed=0):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=24, max_position_embeddings=16, num_labels=3,
                                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(config)
    mb.apply_masks_(model, mb.MaskConfig(sparsity=0.3, score_init="uniform", threshold=0.02))
    return model


def _loss_and_score_grads(model, ids, labels, forward=None):
    model.zero_grad(set_to_none=True)
    loss = (model if forward is None else forward)(input_ids=ids, labels=labels).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if n.endswith("scores")}
    return loss.detach(), grads


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_masked_bert_matches_eager(backend, one_torch_thread):
    import torch._dynamo

    model = _tiny_masked_bert()
    ids = torch.randint(0, 40, (3, 9), generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([0, 2, 1])
    eager_loss, eager_grads = _loss_and_score_grads(model, ids, labels)
    assert len(eager_grads) == 13 and all(g.abs().sum() > 0 for g in eager_grads.values())
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    loss, grads = _loss_and_score_grads(model, ids, labels, forward=compiled)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == eager_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], eager_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_compiled_graph_has_one_node_per_masked_layer():
    import torch._dynamo

    model = _tiny_masked_bert()
    ids = torch.randint(0, 40, (2, 5))
    seen = []

    def count_ops(gm, example_inputs):
        seen.append(sum(1 for n in gm.graph.nodes if n.op == "call_function"
                        and "masked_linear_fwd" in str(n.target)))
        return gm.forward

    torch._dynamo.reset()
    torch.compile(model, fullgraph=True, backend=count_ops)(input_ids=ids)
    assert seen == [13]  # 12 encoder linears + the pooler, one op call each


def test_arguments_are_checked_once_per_module(monkeypatch):
    from maskedbert import modules

    calls = []
    real = modules.validate_arguments
    monkeypatch.setattr(modules, "validate_arguments", lambda *a: calls.append(1) or real(*a))
    layer = mb.MaskedLinear.from_linear(torch.nn.Linear(6, 4), sparsity=0.5)
    x = torch.randn(3, 6)
    for _ in range(3):
        layer(x)
    assert len(calls) == 1
    layer.double()  # dtypes changed: checked again, and the check sees float64 is not supported
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        layer(x.double())
    layer.float()
    layer(x)
    layer.backend = "torch"
    layer(x)
    assert len(calls) == 4
    with pytest.raises(ValueError, match="in_features=6"):
        layer(torch.randn(3, 5))


def test_masked_weight_is_kept_from_the_forward(monkeypatch):
    from maskedbert.kernels import masked_linear_op as op

    preps = []
    real = op._PREP["torch"]
    monkeypatch.setitem(op._PREP, "torch", lambda *a, **k: preps.append(k.get("scores") is not None) or real(*a, **k))
    x = torch.randn(4, 6, requires_grad=True)
    w = torch.randn(5, 6)
    s = torch.randn(5, 6, requires_grad=True)
    masked_linear(x, w, scores=s, backend="torch").sum().backward()
    assert preps == [True]  # the forward's one prep; dx reuses its W*M
    preps.clear()
    x.grad = s.grad = None
    masked_linear(x, w, scores=s, backend="torch", keep_masked_weight=False).sum().backward()
    assert preps == [True, False]  # backward prepares W*M again from the saved mask
    dense = torch.where(s.detach() > 0, w, 0)
    torch.testing.assert_close(x.grad, torch.ones(4, 5) @ dense)


@pytest.mark.gpu
def test_compiled_masked_bert_matches_eager_on_cuda(cuda_device):
    # the Triton paths inside the registered op, traced by torch.compile (aot_eager: no inductor
    # compile time in a short GPU slot)
    import torch._dynamo

    model = _tiny_masked_bert().to(cuda_device)
    ids = torch.randint(0, 40, (3, 9), generator=torch.Generator().manual_seed(2)).to(cuda_device)
    labels = torch.tensor([0, 2, 1], device=cuda_device)
    eager_loss, eager_grads = _loss_and_score_grads(model, ids, labels)
    torch._dynamo.reset()
    loss, grads = _loss_and_score_grads(model, ids, labels,
                                        forward=torch.compile(model, fullgraph=True, backend="aot_eager"))
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    for name in grads:
        torch.testing.assert_close(grads[name], eager_grads[name], rtol=1e-4, atol=1e-6, msg=name)
