"""`maskedbert srnet`: sparse and robust subnetworks (Liu et al., NeurIPS 2022), end to end.

Pipelines (each with any loss: ce, poe, reweight, conf_reg), over a sparsity sweep (20/50/70/90%):
  ft_prune         (a) fine-tune the full model with the loss, then prune it: mask training (weights
                       frozen) or IMP (rewinding to the fine-tuned weights)
  prune_ft         (b) prune the pretrained model (mask training, or IMP rewinding to the pretrained
                       weights), then fine-tune the subnetwork with the loss
  mask_pretrained  (c) mask-train the pretrained model; weights never change (the new head trains)
  --oracle             mask-train the CE fine-tuned model on out-of-distribution training data
Outputs in --out: results.csv / results.md (ID and OOD metric per pipeline, method, loss and
sparsity), srnet_sparsity.png, config.json (the resolved config), masks/*.safetensors, cells/*.json.
A rerun with the same --out skips finished cells and resumes an IMP sequence at its next round.

Default data: the offline synthetic NLI task with a planted overlap shortcut and its HANS-style
challenge set; real tasks go through maskedbert.data (--task mnli --data-dir ... --ood-task hans ...).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import time

import torch

from maskedbert import bias as bias_lib
from maskedbert._atomic import atomic_path
from maskedbert.train.checkpoint import atomic_torch_save
from maskedbert import evaluation as ev
from maskedbert import losses as loss_lib
from maskedbert import pruning

from maskedbert.experiments.srnet_config import PIPELINES, RESULT_COLUMNS, SRNetConfig, load_task_data


def _as_dicts(examples) -> list[dict]:
    return [{"id": e.id, "premise": e.text_a, "hypothesis": e.text_b or "", "label": int(e.label)} for e in examples]


def _collapsed_nli_loss(entail_index: int):
    """CE on entailment vs the rest of a multi-class head: oracle training on 2-label HANS-style data."""
    def loss_fn(logits, batch):
        log_probs = torch.log_softmax(logits, dim=1)
        others = [c for c in range(logits.shape[1]) if c != entail_index]
        binary = torch.stack([log_probs[:, entail_index], torch.logsumexp(log_probs[:, others], dim=1)], dim=1)
        return torch.nn.functional.nll_loss(binary, batch["labels"])
    return loss_fn


# ---- the runner -----------------------------------------------------------------------------------------
class SRNetRunner:
    """Holds the data, the pristine model, the fine-tuned models, bias and teacher probabilities."""

    def __init__(self, cfg: SRNetConfig, log=print):
        from maskedbert.data.collate import PadCollator
        from maskedbert.metrics import label_mapping
        from maskedbert.models import load_model_and_tokenizer

        self.cfg, self.log = cfg, log
        os.makedirs(cfg.out, exist_ok=True)
        self.data = load_task_data(cfg)
        torch.manual_seed(cfg.seed)
        self.pristine, self.tokenizer = load_model_and_tokenizer(
            cfg.model, len(self.data.label_names), label_names=list(self.data.label_names), vocab=self.data.vocab,
            config_overrides=cfg.config_overrides or None)
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.pristine.to(device).eval()
        self.label_map = label_mapping(self.data.label_names, self.pristine.config.label2id)
        self.model_names = ev.model_label_names(self.pristine, self.data.label_names)
        self.collate = PadCollator(self.tokenizer.pad_token_id)
        self._encoded = self._encode(self.data.train, self.label_map)
        self._finetuned: dict[str, dict] = {}
        self._bias: dict | None = None
        self._teacher: dict | None = None

    def _encode(self, examples, label_map):
        from maskedbert.data.collate import encode_examples

        return encode_examples(examples, self.tokenizer, max_length=self.cfg.max_length, label_map=label_map)

    def _path(self, *parts) -> str:
        return os.path.join(self.cfg.out, *parts)

    # probabilities come in dataset label order; the model's head may order labels differently
    def _to_model_order(self, rows: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(rows)
        out[:, self.label_map] = rows
        return out

    def bias_probs(self) -> dict:
        if self._bias is None:
            cache = self._path("bias_probs.json")
            if os.path.isfile(self.cfg.bias_model):
                self._bias = bias_lib.load_probs(self.cfg.bias_model)
            elif os.path.isfile(cache):
                self._bias = bias_lib.load_probs(cache)
            else:  # out-of-fold predictions: the bias model never scores examples it was fit on
                self.log(f"fitting the {self.cfg.bias_model!r} bias model (5-fold cross-fit)")
                self._bias = bias_lib.cross_fit_probs(self.cfg.bias_model, _as_dicts(self.data.train),
                                                      len(self.data.label_names), folds=5, seed=self.cfg.seed)
                bias_lib.save_probs(cache, self._bias)
        return self._bias

    def teacher_probs(self) -> dict:
        if self._teacher is None:
            cache = self._path("teacher_probs.json")
            if self.cfg.teacher_probs:
                self._teacher = bias_lib.load_probs(self.cfg.teacher_probs)
            elif os.path.isfile(cache):
                self._teacher = bias_lib.load_probs(cache)
            else:  # the CE fine-tuned model is the teacher (Utama et al. 2020)
                teacher = self.finetuned("ce")
                logits = ev.predict_logits(teacher, self.tokenizer, self.data.train, max_length=self.cfg.max_length)
                probs = torch.softmax(logits, dim=1)[:, self.label_map]  # back to dataset label order
                self._teacher = {e.id: row for e, row in zip(self.data.train, probs.tolist())}
                bias_lib.save_probs(cache, self._teacher)
        return self._teacher

    def train_dataset(self, loss: str):
        fields = {}
        ids = self._encoded.example_ids
        if loss_lib.NEEDS_BIAS[loss]:
            fields["bias_probs"] = self._to_model_order(bias_lib.align_probs(ids, self.bias_probs(), "bias_probs"))
        if loss_lib.NEEDS_TEACHER[loss]:
            fields["teacher_probs"] = self._to_model_order(
                bias_lib.align_probs(ids, self.teacher_probs(), "teacher_probs"))
        return self._encoded.with_fields(**fields) if fields else self._encoded

    def loss_fn(self, loss: str, steps: int):
        if self.cfg.anneal_floor is not None and loss_lib.NEEDS_BIAS[loss]:
            return loss_lib.make_loss_fn(loss, anneal_floor=self.cfg.anneal_floor, total_steps=steps)
        return loss_lib.make_loss_fn(loss)

    def settings(self, steps: int, **changes) -> pruning.TrainSettings:
        return pruning.TrainSettings(steps=steps, batch_size=self.cfg.batch_size, lr=self.cfg.lr,
                                     lr_scores=self.cfg.lr_scores, seed=self.cfg.seed, **changes)

    def fresh_model(self):
        return copy.deepcopy(self.pristine)

    def finetuned(self, loss: str):
        """The dense model fine-tuned with `loss` (cached in memory and in checkpoints/)."""
        from safetensors.torch import load_file, save_file

        path = self._path("checkpoints", f"finetuned-{loss}.safetensors")
        if loss not in self._finetuned:
            model = self.fresh_model()
            if os.path.isfile(path):
                model.load_state_dict(load_file(path))
            else:
                self.log(f"fine-tuning the dense model with loss {loss!r} ({self.cfg.ft_steps} steps)")
                os.makedirs(os.path.dirname(path), exist_ok=True)

                def save(target):
                    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
                    with atomic_path(target, suffix=".safetensors") as tmp:
                        save_file(state, tmp)

                def on_step(step):  # intermediate checkpoints: mask training / rewinding can start there
                    if step in self.cfg.save_ft_steps:
                        save(self._path("checkpoints", f"finetuned-{loss}-step{step}.safetensors"))

                pruning.train_steps(model, self.train_dataset(loss), self.collate,
                                    self.loss_fn(loss, self.cfg.ft_steps), self.settings(self.cfg.ft_steps), step_callback=on_step, desc=f"fine-tune {loss}",
                                    output_dir=self._path("logs", f"finetune-{loss}"))
                save(path)
            self._finetuned[loss] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model = self.fresh_model()
        model.load_state_dict(self._finetuned[loss])
        return model

    # ---- evaluation and bookkeeping ---------------------------------------------------------------
    def evaluate(self, model) -> dict:
        """ID accuracy and OOD metrics; a masked model is evaluated merged (dense W*M, the export form)."""
        from maskedbert.patching import merge_and_unload

        cfg = self.cfg
        try:
            measured = pruning.score_mask_sparsity(model)
            model = merge_and_unload(copy.deepcopy(model))
        except ValueError:  # no masks: a dense model
            measured = 0.0
        logits = ev.predict_logits(model, self.tokenizer, self.data.dev, max_length=cfg.max_length)
        inverse = {m: d for d, m in enumerate(self.label_map)}
        preds = [inverse.get(int(p), -1) for p in logits.argmax(1)]
        id_acc = sum(p == int(e.label) for p, e in zip(preds, self.data.dev)) / len(self.data.dev)
        ood_logits = ev.predict_logits(model, self.tokenizer, self.data.ood, max_length=cfg.max_length)
        ood = ev.ood_metrics(self.data.ood_kind, ood_logits.argmax(1), self.data.ood, self.model_names)
        row = {"id_accuracy": id_acc, "ood_accuracy": ood["accuracy"],
               "ood_entailment": ood.get("entailment", ood.get("duplicate", ood.get("supports"))),
               "ood_non_entailment": ood.get("non_entailment", ood.get("non_duplicate", ood.get("refutes"))),
               "ood_detail": ood, "measured_sparsity": measured}
        return row

    @staticmethod
    def cell_key(pipeline: str, method: str, loss: str, sparsity: float) -> str:
        return f"{pipeline}-{method}-{loss}-s{sparsity:.2f}"

    def done(self, key: str) -> bool:
        return os.path.isfile(self._path("cells", key + ".json"))

    def record(self, key: str, row: dict, model=None) -> None:
        from maskedbert.masks import save_masks

        if model is not None and pruning.masked_modules(model):
            mask_path = self._path("masks", key + ".safetensors")
            os.makedirs(os.path.dirname(mask_path), exist_ok=True)
            save_masks(model, mask_path)
            row["mask_file"] = os.path.relpath(mask_path, self.cfg.out)
        ev.write_text_atomic(self._path("cells", key + ".json"), json.dumps(row, indent=2, sort_keys=True))
        self.log(f"  {key}: ID acc {row['id_accuracy']:.4f}  OOD acc {row['ood_accuracy']:.4f}  "
                 f"sparsity {row['measured_sparsity']:.4f}")

    # ---- cells ------------------------------------------------------------------------------------
    def run_dense(self, loss: str) -> None:
        key = self.cell_key("finetune", "dense", loss, 0.0)
        if self.done(key):
            return
        start = time.perf_counter()
        row = self.evaluate(self.finetuned(loss))
        row.update(pipeline="finetune", method="dense", loss=loss, sparsity=0.0,
                   seconds=time.perf_counter() - start)
        self.record(key, row)

    def mask_train_(self, model, loss: str, sparsity: float, *, train_classifier: bool, dataset=None,
                    loss_fn=None, desc: str = "mask") -> float:
        """Mask training to `sparsity` on the cubic schedule; weights frozen; ends at exact sparsity.

        Returns the fraction of mask entries that differ from the initial magnitude mask (0 means
        training changed nothing: the result is plain magnitude pruning).
        """
        from maskedbert.config import MaskConfig
        from maskedbert.patching import apply_masks_

        cfg = self.cfg
        initial = min(cfg.initial_sparsity, sparsity)
        apply_masks_(model, MaskConfig(mode="scores", threshold=cfg.threshold, sparsity=initial, scope=cfg.scope,
                                       train_classifier=train_classifier))
        schedule = pruning.CubicSparsitySchedule.for_training(cfg.prune_steps, initial, sparsity)
        controller = pruning.MaskSparsityController(model, schedule, method=cfg.sparsity_method,
                                                    reset_every=cfg.reset_every, scope=cfg.scope)
        controller.apply(0)
        layers = pruning.masked_modules(model)
        initial_masks = {name: layer.mask().clone() for name, layer in layers.items()}
        pruning.train_steps(model, dataset if dataset is not None else self.train_dataset(loss), self.collate,
                            loss_fn or self.loss_fn(loss, cfg.prune_steps), self.settings(cfg.prune_steps),
                            step_callback=controller, desc=desc, output_dir=self._path("logs", desc.replace(" ", "-")))
        controller.finalize()
        changed = sum(int((layer.mask() != initial_masks[name]).sum()) for name, layer in layers.items())
        return changed / sum(m.numel() for m in initial_masks.values())

    def finetune_subnetwork_(self, model, loss: str, masks: dict, key: str) -> None:
        """Fix the masks found on a model, make its weights trainable and fine-tune them with `loss`."""
        from maskedbert.config import MaskConfig
        from maskedbert.patching import apply_masks_, merge_and_unload

        layers = pruning.masked_modules(model)
        merge_and_unload(model)  # weights were frozen: W*M, with the pruned entries re-masked below
        apply_masks_(model, MaskConfig(mode="fixed", train_weights=True, scope=self.cfg.scope))
        for name, layer in pruning.masked_modules(model).items():
            layer.set_mask_(masks[name])
        del layers
        pruning.train_steps(model, self.train_dataset(loss), self.collate, self.loss_fn(loss, self.cfg.ft_steps),
                            self.settings(self.cfg.ft_steps), desc=f"fine-tune subnetwork {loss}",
                            output_dir=self._path("logs", f"{key}-finetune"))

    def pruning_start(self, loss: str):
        """The model pipeline (a) prunes: fine-tuned with `loss`, with CE, or loaded from a checkpoint."""
        if self.cfg.prune_start == "same_loss":
            return self.finetuned(loss)
        if self.cfg.prune_start == "ce":
            return self.finetuned("ce")
        model = self.fresh_model()
        pruning.rewind_weights_(model, pruning.load_rewind_state(self.cfg.prune_start), rewind_classifier=True)
        return model

    def head_trains(self, new_head: bool) -> bool:
        return new_head if self.cfg.train_classifier is None else self.cfg.train_classifier

    def run_mask_cell(self, pipeline: str, loss: str, sparsity: float) -> None:
        key = self.cell_key(pipeline, "mask", loss, sparsity)
        if self.done(key):
            return
        start = time.perf_counter()
        if pipeline == "ft_prune":
            model = self.pruning_start(loss)
            change = self.mask_train_(model, loss, sparsity, train_classifier=self.head_trains(False), desc=key)
        else:
            model = self.fresh_model()  # the head is new: it trains with the scores
            change = self.mask_train_(model, loss, sparsity, train_classifier=self.head_trains(True), desc=key)
            if pipeline == "prune_ft":
                masks = {n: m.mask().clone() for n, m in pruning.masked_modules(model).items()}
                self.finetune_subnetwork_(model, loss, masks, key)
        row = self.evaluate(model)
        row.update(pipeline=pipeline, method="mask", loss=loss, sparsity=sparsity, mask_change=change,
                   seconds=time.perf_counter() - start)
        self.record(key, row, model)

    def run_imp_sequence(self, pipeline: str, loss: str) -> None:
        """One IMP run to the largest sweep sparsity; every sweep level is trained once and evaluated.

        The training of round r *is* the training of the level-(r-1) subnetwork from the rewound
        weights, so it is evaluated right there; one more training evaluates the last level.
        """
        from maskedbert.config import MaskConfig
        from maskedbert.masks import save_masks
        from maskedbert.patching import apply_masks_

        cfg = self.cfg
        keys = {s: self.cell_key(pipeline, "imp", loss, s) for s in cfg.sparsities}
        if all(self.done(k) for k in keys.values()):
            return
        levels = sorted(set(pruning.imp_sparsity_levels(max(cfg.sparsities), cfg.imp_per_round, cfg.imp_amount_of))
                        | set(cfg.sparsities))
        model = self.pruning_start(loss) if pipeline == "ft_prune" else self.fresh_model()
        rewind_state = pruning.load_rewind_state(cfg.rewind_to) if cfg.rewind_to else None
        apply_masks_(model, MaskConfig(mode="fixed", train_weights=True, scope=cfg.scope))
        current = {"level": 0.0, "start": time.perf_counter()}
        dataset = self.train_dataset(loss)
        # after every round: the pruned, rewound model and the rewind state, so an interrupted
        # sequence resumes at its next round instead of round 0
        resume_path = self._path("resume", f"{pipeline}-imp-{loss}.pt")
        start_round = 0
        if os.path.isfile(resume_path):
            saved = torch.load(resume_path, map_location="cpu", weights_only=True)
            model.load_state_dict(saved["model"])
            rewind_state, start_round, current["level"] = saved["rewind"], saved["next_round"], saved["level"]
            self.log(f"IMP {pipeline} {loss}: resuming at round {start_round} (level {current['level']:.2f})")
        elif rewind_state is None:
            rewind_state = pruning.snapshot_weights(model)

        def evaluate_level(m):
            level = current["level"]
            if level in keys and not self.done(keys[level]):
                row = self.evaluate(m)
                row.update(pipeline=pipeline, method="imp", loss=loss, sparsity=level,
                           seconds=time.perf_counter() - current["start"])
                self.record(keys[level], row, m)

        def train_round(m, r):
            if not (pipeline == "ft_prune" and r == 0):  # (a) starts from weights already fine-tuned
                pruning.train_steps(m, dataset, self.collate, self.loss_fn(loss, cfg.prune_steps),
                                    self.settings(cfg.prune_steps), desc=f"IMP {pipeline} {loss} round {r}",
                                    output_dir=self._path("logs", f"{pipeline}-imp-{loss}-round{r}"))
            evaluate_level(m)

        def on_level(m, level, r):
            current.update(level=level, start=time.perf_counter())
            save_masks(m, self._path("masks", f"{pipeline}-imp-{loss}-level{level:.2f}.safetensors"))
            state = {k: v.detach().cpu() for k, v in m.state_dict().items()}
            atomic_torch_save({"model": state, "rewind": rewind_state, "next_round": r + 1, "level": level},
                              resume_path)

        pruning.iterative_magnitude_pruning(model, train_round, levels, scope=cfg.scope, rewind_state=rewind_state,
                                            rewind_classifier=cfg.rewind_classifier, on_level=on_level,
                                            start_round=start_round)
        train_round(model, len(levels))  # train and evaluate the last level
        os.unlink(resume_path)  # every level's cell is recorded now

    def run_oracle_cell(self, sparsity: float) -> None:
        key = self.cell_key("oracle", "mask", "ce", sparsity)
        if self.done(key) or not self.data.ood_train:
            return
        start = time.perf_counter()
        model = self.finetuned("ce")
        if self.data.ood_kind == "hans":
            entail = self.model_names.index(next(n for n in self.model_names if ev.normalize_name(n) == "entailment"))
            dataset, loss_fn = self._encode(self.data.ood_train, None), _collapsed_nli_loss(entail)
        else:
            dataset, loss_fn = self._encode(self.data.ood_train, None), loss_lib.make_loss_fn("ce")
        change = self.mask_train_(model, "ce", sparsity, train_classifier=self.head_trains(False), dataset=dataset,
                                  loss_fn=loss_fn,
                         desc=key)
        row = self.evaluate(model)
        row.update(pipeline="oracle", method="mask", loss="ce", sparsity=sparsity, mask_change=change,
                   seconds=time.perf_counter() - start)
        self.record(key, row, model)

    # fields that only say which cells to run; any other change makes earlier cells incomparable
    SWEEP_FIELDS = ("out", "pipelines", "methods", "losses", "sparsities", "oracle")

    def check_resumable(self) -> None:
        """Refuse to mix cells computed under a different config into one table."""
        path = self._path("config.json")
        if not os.path.isfile(path):
            return
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        new = dataclasses.asdict(self.cfg)
        changed = sorted(k for k in new if k not in self.SWEEP_FIELDS and k in old and old[k] != new[k])
        if changed:
            raise ValueError(f"{self.cfg.out} holds results of a run with different settings ({', '.join(changed)}); "
                             f"use another --out or delete it")

    def run(self) -> list[dict]:
        cfg = self.cfg
        self.check_resumable()
        ev.write_text_atomic(self._path("config.json"), json.dumps(dataclasses.asdict(cfg), indent=2, sort_keys=True))
        for loss in cfg.losses:
            self.run_dense(loss)
        for pipeline in cfg.pipelines:
            for loss in cfg.losses:
                methods = ["mask"] if pipeline == "mask_pretrained" else cfg.methods
                for method in methods:
                    if method == "imp":
                        self.run_imp_sequence(pipeline, loss)
                    else:
                        for s in cfg.sparsities:
                            self.run_mask_cell(pipeline, loss, s)
        if cfg.oracle:
            for s in cfg.sparsities:
                self.run_oracle_cell(s)
        return self.collect()

    def collect(self) -> list[dict]:
        rows = []
        folder = self._path("cells")
        for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            if name.endswith(".json"):
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    rows.append(json.load(f))
        order = {p: i for i, p in enumerate(("finetune", *PIPELINES, "oracle"))}
        rows.sort(key=lambda r: (order.get(r["pipeline"], 99), r["method"], r["loss"], r["sparsity"]))
        return rows


def write_report(rows: list[dict], out: str, title: str) -> list[str]:
    """results.csv / results.md and srnet_sparsity.png (dense models as dashed reference lines)."""
    paths = ev.write_results(rows, out, RESULT_COLUMNS)
    curves = [dict(r, series=f"{r['pipeline']}/{r['method']}/{r['loss']}") for r in rows if r["method"] != "dense"]
    dense = [r for r in rows if r["method"] == "dense"]
    plot = os.path.join(out, "srnet_sparsity.png")
    metrics = [("id_accuracy", "ID accuracy"), ("ood_accuracy", "OOD accuracy")]
    ev.plot_metrics_vs_sparsity(curves, plot, metrics=metrics, series_key="series", title=title, references=dense)
    return paths + [plot]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_args(argv) -> SRNetConfig:
    d = SRNetConfig()
    p = argparse.ArgumentParser(prog="maskedbert srnet", description=__doc__.splitlines()[0])
    p.add_argument("--out", default=d.out)
    p.add_argument("--task", default=d.task, help="synthetic-nli (offline) or a registered task, e.g. mnli")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--ood-task", default=d.ood_task, help="hans, paws-qqp, paws-wiki, fever-symmetric-v1/v2")
    p.add_argument("--ood-data-dir", default=None)
    p.add_argument("--ood-split", default=d.ood_split)
    p.add_argument("--model", default=d.model, help="offline-minilm, tiny-bert, a hub name or a local directory")
    p.add_argument("--pipelines", type=_names, default=d.pipelines, help=f"comma list of {PIPELINES}")
    p.add_argument("--methods", type=_names, default=d.methods, help="comma list of mask, imp")
    p.add_argument("--losses", type=_names, default=d.losses, help="comma list of ce, poe, reweight, conf_reg")
    p.add_argument("--sparsities", type=_floats, default=d.sparsities)
    p.add_argument("--oracle", action="store_true", help="also mask-train on OOD training data (oracle)")
    p.add_argument("--bias-model", default=d.bias_model,
                   help="hans_features, features, hypothesis_only, or a probabilities file")
    p.add_argument("--teacher-probs", default=None, help="teacher probabilities file (default: CE fine-tuned model)")
    p.add_argument("--anneal-floor", type=float, default=None, help="anneal bias probabilities to this power")
    for name in ("ft_steps", "prune_steps", "batch_size", "max_length", "reset_every", "train_size", "dev_size",
                 "challenge_per_cell", "seed"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("lr", "lr_scores", "threshold", "initial_sparsity", "imp_per_round"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    p.add_argument("--device", default=d.device, help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--eval-limit", type=int, default=None)
    p.add_argument("--sparsity-method", default=d.sparsity_method, choices=pruning.SPARSITY_METHODS)
    p.add_argument("--scope", default=d.scope, choices=("layer", "global"))
    p.add_argument("--imp-amount-of", default=d.imp_amount_of, choices=pruning.AMOUNT_OF)
    p.add_argument("--rewind-classifier", action="store_true", help="IMP also rewinds the task head")
    p.add_argument("--prune-start", default=d.prune_start,
                   help="ft_prune starts from: same_loss (default), ce, or a checkpoint path (any fine-tuning step)")
    p.add_argument("--rewind-to", default=None, help="IMP rewinds to this checkpoint (default: its starting weights)")
    p.add_argument("--train-classifier", choices=("auto", "yes", "no"), default="auto",
                   help="mask training: auto freezes a fine-tuned head and trains a new one")
    p.add_argument("--save-ft-steps", type=lambda t: [int(v) for v in _names(t)], default=[],
                   help="comma list of fine-tuning steps to checkpoint (to prune or rewind from later)")
    args = vars(p.parse_args(argv))
    args["train_classifier"] = {"auto": None, "yes": True, "no": False}[args["train_classifier"]]
    try:
        return SRNetConfig(**args)
    except ValueError as err:
        p.error(str(err))


def main(argv=None) -> int:
    cfg = parse_args(argv)
    start = time.perf_counter()
    runner = SRNetRunner(cfg)
    rows = runner.run()
    paths = write_report(rows, cfg.out, f"{cfg.model} on {cfg.task}: ID vs OOD ({runner.data.ood_kind})")
    print(ev.results_text_table(rows, RESULT_COLUMNS))
    print(f"done in {time.perf_counter() - start:.1f} s; wrote " + ", ".join(paths))
    return 0
