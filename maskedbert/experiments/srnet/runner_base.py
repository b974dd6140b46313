"""The shared state of an srnet study: data, the pristine model, fine-tuned models, bias and teacher
probabilities, evaluation and the cell files. The pipelines themselves are in pipelines.py."""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os

import torch
from safetensors.torch import load_file, save_file

from maskedbert import bias as bias_lib
from maskedbert import evaluation as ev
from maskedbert import losses as loss_lib
from maskedbert import pruning
from maskedbert._atomic import atomic_path
from maskedbert.data.collate import PadCollator, encode_examples
from maskedbert.errors import UsageError
from maskedbert.experiments.srnet.config import PIPELINES, SWEEP_FIELDS, SRNetConfig
from maskedbert.experiments.srnet.data import load_task_data
from maskedbert.masks import save_masks
from maskedbert.metrics import compute_metrics, label_mapping
from maskedbert.models import load_model_and_tokenizer
from maskedbert.patching import merge_and_unload
from maskedbert.train.checkpoint import set_aside
from maskedbert.train.trainer import TrainConfig


def train_config(cfg: SRNetConfig, steps: int, output_dir: str, *, schedule_steps: int | None = None,
                 progress: bool = True) -> TrainConfig:
    """The TrainConfig of one srnet training run: `steps` optimizer steps with `cfg`'s optimizer
    settings, the learning rate schedule over `schedule_steps` (default `steps`), logs in `output_dir`.
    The mask scores' learning rate, cfg.lr_scores, goes to pruning.train_steps beside it."""
    return TrainConfig(
        output_dir=output_dir, max_steps=steps, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay,
        adam_eps=cfg.adam_eps, warmup_steps=cfg.warmup_steps,
        warmup_ratio=None if cfg.warmup_steps is not None else cfg.warmup_ratio,  # warmup_steps, when given, wins
        schedule_steps=schedule_steps, max_grad_norm=cfg.max_grad_norm or None,  # --max-grad-norm 0: no clipping
        clip_mode=cfg.clip_mode, seed=cfg.seed, report_to=cfg.report_to, progress=progress)


def _as_dicts(examples) -> list[dict]:
    return [{"id": e.id, "premise": e.text_a, "hypothesis": e.text_b or "", "label": int(e.label)} for e in examples]


class SRNetBase:
    """Holds the data, the pristine model, the fine-tuned models, bias and teacher probabilities."""

    SWEEP_FIELDS = SWEEP_FIELDS

    def __init__(self, cfg: SRNetConfig, log=print, progress: bool = True):
        # cfg: the config of the cell being run (SRNetConfig.for_cell); base_cfg: the study's (dense models)
        self.cfg = self.base_cfg = cfg
        self.log, self.progress = log, progress
        self.data = load_task_data(cfg)
        torch.manual_seed(cfg.seed)
        self.pristine, self.tokenizer = load_model_and_tokenizer(
            cfg.model, len(self.data.label_names), label_names=list(self.data.label_names), vocab=self.data.vocab,
            config_overrides=cfg.config_overrides or None, tokenizer=cfg.tokenizer)
        os.makedirs(cfg.out, exist_ok=True)  # after the model loaded: a bad --model leaves nothing behind
        device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.pristine.to(device).eval()
        self.label_map = label_mapping(self.data.label_names, self.pristine.config.label2id)
        self.model_names = ev.model_label_names(self.pristine, self.data.label_names)
        self.collate = PadCollator(self.tokenizer.pad_token_id)
        self._encoded = self._encode(self.data.train, self.label_map)
        self.ft_steps = cfg.steps("ft", len(self.data.train))
        self.prune_steps = cfg.steps("prune", len(self.data.train))
        self._finetuned: dict[str, dict] = {}
        self._bias: dict | None = None
        self._teacher: dict | None = None
        self._open_runs: list[str] = []  # resumable training runs of the cell in progress (logs/<run>/)
        self.skipped: list[str] = []

    def _encode(self, examples, label_map):
        return encode_examples(examples, self.tokenizer, max_length=self.cfg.max_length, label_map=label_map)

    def _path(self, *parts) -> str:
        return os.path.join(self.cfg.out, *parts)

    # probabilities come in dataset label order; the model's head may order labels differently
    def _to_model_order(self, rows: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(rows)
        out[:, self.label_map] = rows
        return out

    def _load_probs_file(self, path: str, order: str | None, flag: str) -> dict:
        """A bias or teacher file by training-example id, columns in the task's label order."""
        return bias_lib.load_probs(path, ids=[e.id for e in self.data.train], label_names=self.data.label_names,
                                   label_order=order, order_flag=flag)

    def _save_probs(self, name: str, probs: dict) -> None:
        """<out>/<name>: what the study trained with, labelled (a reader can check the columns)."""
        bias_lib.save_probs(self._path(name), probs, label_names=self.data.label_names)

    def bias_probs(self) -> dict:
        if self._bias is None:
            cache = self._path("bias_probs.json")
            if os.path.isfile(self.cfg.bias_model):
                # .npy rows follow the training file's order: ids say which row is which example
                self._bias = self._load_probs_file(self.cfg.bias_model, self.cfg.bias_label_order,
                                                   "--bias-label-order")
                self._save_probs("bias_probs.json", self._bias)
            elif os.path.isfile(cache) and (cached := self._load_cache(cache)) is not None:
                self._bias = cached
            else:  # out-of-fold predictions: the bias model never scores examples it was fit on
                self.log(f"fitting the {self.cfg.bias_model!r} bias model (5-fold cross-fit)")
                self._bias = bias_lib.cross_fit_probs(self.cfg.bias_model, _as_dicts(self.data.train),
                                                      len(self.data.label_names), folds=5, seed=self.cfg.seed)
                self._save_probs("bias_probs.json", self._bias)
        return self._bias

    def teacher_probs(self) -> dict:
        if self._teacher is None:
            cache = self._path("teacher_probs.json")
            if self.cfg.teacher_probs:
                self._teacher = self._load_probs_file(self.cfg.teacher_probs, self.cfg.teacher_label_order,
                                                      "--teacher-label-order")
                self._save_probs("teacher_probs.json", self._teacher)
            elif os.path.isfile(cache) and (cached := self._load_cache(cache)) is not None:
                self._teacher = cached
            else:  # the CE fine-tuned model is the teacher (Utama et al. 2020)
                teacher = self.finetuned("ce")
                logits = self.predict(teacher, self.data.train, "teacher predictions")
                probs = torch.softmax(logits, dim=1)[:, self.label_map]  # back to dataset label order
                self._teacher = {e.id: row for e, row in zip(self.data.train, probs.tolist())}
                self._save_probs("teacher_probs.json", self._teacher)
        return self._teacher

    def _load_cache(self, path: str) -> dict | None:
        """A shared probabilities file of this study; one that does not load (torn, emptied) is set aside
        (None: the caller rebuilds it from the same inputs)."""
        try:
            return bias_lib.load_probs(path, label_names=self.data.label_names)
        except Exception as exc:  # any parse error
            self._set_aside(path, exc)
            return None

    def _set_aside(self, path: str, exc: BaseException) -> None:
        moved = set_aside(path)
        self.log(f"[srnet] {path} is unreadable ({type(exc).__name__}: {str(exc)[:200]}); moved to {moved}, "
                 f"rebuilding it")

    def train_dataset(self, loss: str):
        fields = {}
        ids = self._encoded.example_ids
        if loss_lib.LOSSES[loss].needs_bias:
            fields["bias_probs"] = self._to_model_order(bias_lib.align_probs(ids, self.bias_probs(), "bias_probs"))
        if loss_lib.LOSSES[loss].needs_teacher:
            fields["teacher_probs"] = self._to_model_order(
                bias_lib.align_probs(ids, self.teacher_probs(), "teacher_probs"))
        return self._encoded.with_fields(**fields) if fields else self._encoded

    def loss_fn(self, loss: str, steps: int):
        if self.cfg.anneal_floor is not None and loss_lib.LOSSES[loss].needs_bias:
            return loss_lib.make_loss_fn(loss, anneal_floor=self.cfg.anneal_floor, total_steps=steps)
        return loss_lib.make_loss_fn(loss)

    def train(self, model, loss: str, steps: int, desc: str, *, dataset=None, loss_fn=None, step_callback=None,
              cfg: SRNetConfig | None = None, schedule_steps: int | None = None, resume: bool = False,
              stateful: dict | None = None):
        """`steps` optimizer steps of `model` with `loss` (settings of `cfg`, default the cell's; the LR
        schedule over `schedule_steps`, default `steps`); the log goes to logs/<desc>/. resume=True: the
        run checkpoints there (wall time, SIGTERM/SIGUSR1) and a rerun continues it; `stateful` objects
        (the step callback's) are saved with it. Its checkpoint is deleted once the cell is recorded
        (`finish_runs`), unless --keep-checkpoints."""
        cfg = cfg or self.cfg
        output_dir = self._path("logs", desc.replace(" ", "-"))
        if resume:
            self._open_runs.append(output_dir)
        config = train_config(cfg, steps, output_dir, schedule_steps=schedule_steps, progress=self.progress)
        return pruning.train_steps(model, dataset if dataset is not None else self.train_dataset(loss), self.collate,
                                   loss_fn or self.loss_fn(loss, steps), config, lr_scores=cfg.lr_scores,
                                   step_callback=step_callback, desc=desc, resume=resume, stateful=stateful)

    def finish_runs(self) -> None:
        """Retention: the resumable runs of the cell just recorded drop their checkpoints (model + optimizer)."""
        runs, self._open_runs = self._open_runs, []
        if self.cfg.keep_checkpoints:
            return
        for run_dir in runs:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(run_dir, "checkpoint.pt"))

    def train_selecting(self, model, loss: str, steps: int, desc: str, *, cfg: SRNetConfig, dataset=None,
                        step_callback=None, resume: bool = False) -> dict:
        """Weight training that keeps the best dev checkpoint (cfg.ft_select "best": evaluations every
        cfg.ft_eval_every steps, strict >, none at the last step unless a multiple; the reference's
        hg_transformers/trainer.py:566-601) or the last model; returns the selection record."""
        selector = pruning.BestMaskSelector(
            model, lambda m: self.dev_metric(m, f"{desc}: select on ID dev"), total_steps=steps,
            every=cfg.resolved_ft_eval_every(steps), after=0.0, mode=cfg.ft_select, ties="earlier",
            evaluate_last=False)

        def on_step(step):
            if step_callback is not None:
                step_callback(step)
            selector(step)

        self.train(model, loss, steps, desc, dataset=dataset, step_callback=on_step, cfg=cfg, resume=resume,
                   stateful={"selector": selector})
        return selector.restore()

    @contextlib.contextmanager
    def cell_scope(self, pipeline: str, method: str):
        """Run one pipeline/method with its own settings (SRNetConfig.overrides, e.g. a preset's)."""
        saved = self.cfg, self.ft_steps, self.prune_steps
        self.cfg = self.base_cfg.for_cell(pipeline, method)
        n = len(self.data.train)
        self.ft_steps, self.prune_steps = self.cfg.steps("ft", n), self.cfg.steps("prune", n)
        try:
            yield self.cfg
        finally:
            self.cfg, self.ft_steps, self.prune_steps = saved

    def fresh_model(self):
        return copy.deepcopy(self.pristine)

    def finetuned(self, loss: str):
        """The dense model fine-tuned with `loss` (cached in memory and in checkpoints/)."""
        path = self._path("checkpoints", f"finetuned-{loss}.safetensors")
        if loss not in self._finetuned:
            model = self.fresh_model()
            loaded = False
            if os.path.isfile(path):
                try:
                    model.load_state_dict(load_file(path))
                    loaded = True
                except Exception as exc:  # truncated or emptied: set aside, fine-tuned again (same result)
                    self._set_aside(path, exc)
                    model = self.fresh_model()
            if not loaded:
                cfg = self.base_cfg  # dense models are shared by every cell: the study's settings
                steps = cfg.steps("ft", len(self.data.train), loss)
                self.log(f"fine-tuning the dense model with loss {loss!r} ({steps} steps)")
                os.makedirs(os.path.dirname(path), exist_ok=True)

                def save(target):
                    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
                    with atomic_path(target, suffix=".safetensors") as tmp:
                        save_file(state, tmp)

                def on_step(step):  # intermediate checkpoints: mask training / rewinding can start there
                    if step in cfg.save_ft_steps:
                        save(self._path("checkpoints", f"finetuned-{loss}-step{step}.safetensors"))

                selection = self.train_selecting(model, loss, steps, f"fine-tune {loss}", cfg=cfg,
                                                 step_callback=on_step, resume=True)
                save(path)
                ev.write_text_atomic(self._path("checkpoints", f"finetuned-{loss}.json"),
                                     json.dumps({"steps": steps, **selection}, indent=2))
                self.finish_runs()  # the saved weights are what depends on this run
            self._finetuned[loss] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model = self.fresh_model()
        model.load_state_dict(self._finetuned[loss])
        return model

    # ---- evaluation and bookkeeping ---------------------------------------------------------------
    def predict(self, model, examples, desc: str) -> torch.Tensor:
        return ev.predict_logits(model, self.tokenizer, examples, max_length=self.cfg.max_length,
                                 desc=desc if self.progress else None)

    def _dev_predictions(self, model, desc: str) -> list[int]:
        logits = self.predict(model, self.data.dev, desc)
        inverse = {m: d for d, m in enumerate(self.label_map)}
        return [inverse.get(int(p), -1) for p in logits.argmax(1)]

    @property
    def select_metric(self) -> str:
        return self.data.metric if self.cfg.select_metric == "auto" else self.cfg.select_metric

    def dev_accuracy(self, model, desc: str = "dev accuracy") -> float:
        """In-distribution dev accuracy."""
        preds = self._dev_predictions(model, desc)
        return sum(p == int(e.label) for p, e in zip(preds, self.data.dev)) / len(self.data.dev)

    def dev_metric(self, model, desc: str = "dev metric") -> float:
        """The ID dev metric every selection maximises (--select-metric; auto: the task's, QQP F1)."""
        return self._id_metrics(self._dev_predictions(model, desc))[self.select_metric]

    def _id_metrics(self, preds: list[int]) -> dict:
        labels = [int(e.label) for e in self.data.dev]
        names = sorted({"accuracy", self.select_metric})
        return compute_metrics(names, preds, labels)  # -1 (a head class outside the task) counts as wrong

    def evaluate(self, model, name: str = "model") -> dict:
        """ID accuracy and OOD metrics; a masked model is evaluated merged (dense W*M, the export form)."""
        try:
            measured = pruning.score_mask_sparsity(model)
            model = merge_and_unload(copy.deepcopy(model))
        except ValueError:  # no masks: a dense model
            measured = 0.0
        id_metrics = self._id_metrics(self._dev_predictions(model, f"evaluate {name}: ID dev"))
        id_acc = id_metrics["accuracy"]
        ood_logits = self.predict(model, self.data.ood, f"evaluate {name}: OOD")
        ood = ev.ood_metrics(self.data.ood_kind, ood_logits.argmax(1), self.data.ood, self.model_names)
        ood_sets = {}
        for set_name, kind, examples in self.data.extra_ood:
            logits = self.predict(model, examples, f"evaluate {name}: {set_name}")
            ood_sets[set_name] = ev.ood_metrics(kind, logits.argmax(1), examples, self.model_names)
        more = {"ood_sets": ood_sets,
                "ood_more": "; ".join(f"{k} {v['accuracy']:.4f}" for k, v in ood_sets.items())} if ood_sets else {}
        return {"id_accuracy": id_acc, "id_metric": id_metrics[self.select_metric], **more,
                "id_metric_name": self.select_metric, "ood_accuracy": ood["accuracy"],
                "ood_entailment": ood.get("entailment", ood.get("duplicate", ood.get("supports"))),
                "ood_non_entailment": ood.get("non_entailment", ood.get("non_duplicate", ood.get("refutes"))),
                "ood_detail": ood, "measured_sparsity": measured}

    @staticmethod
    def cell_key(pipeline: str, method: str, loss: str, sparsity: float) -> str:
        return f"{pipeline}-{method}-{loss}-s{sparsity:.2f}"

    def done(self, key: str) -> bool:
        return os.path.isfile(self._path("cells", key + ".json"))

    def skip(self, key: str) -> bool:
        """True (and says so) when the cell is finished: a rerun never recomputes it."""
        if not self.done(key):
            return False
        if key not in self.skipped:
            self.skipped.append(key)
            self.log(f"  {key}: finished earlier, skipped (cells/{key}.json; --fresh or another --out to redo)")
        return True

    def record(self, key: str, row: dict, model=None) -> None:
        if model is not None and pruning.masked_modules(model):
            mask_path = self._path("masks", key + ".safetensors")
            os.makedirs(os.path.dirname(mask_path), exist_ok=True)
            save_masks(model, mask_path)
            row["mask_file"] = os.path.relpath(mask_path, self.cfg.out)
        ev.write_text_atomic(self._path("cells", key + ".json"), json.dumps(row, indent=2, sort_keys=True))
        self.finish_runs()
        self.log(f"  {key}: ID acc {row['id_accuracy']:.4f}  OOD acc {row['ood_accuracy']:.4f}  "
                 f"sparsity {row['measured_sparsity']:.4f}")

    def resolved_config(self) -> dict:
        """The config as saved in config.json: every field, plus the resolved steps and protocols; each
        pipeline/method's "phases" say what it runs, step by step, with the values used."""
        cfg, n = self.base_cfg, len(self.data.train)
        metric = self.data.metric if cfg.select_metric == "auto" else cfg.select_metric
        resolved = {"train_examples": n, "ft_steps": {loss: cfg.steps("ft", n, loss) for loss in cfg.losses},
                    "select_metric": metric,
                    "dense": self._weight_training_phase(cfg, {loss: cfg.steps("ft", n, loss) for loss in cfg.losses},
                                                         metric)}
        protocols = {}
        for pipeline in cfg.pipelines + (["oracle"] if cfg.oracle else []):
            methods = ["mask"] if pipeline in ("mask_pretrained", "oracle") else cfg.methods
            for method in methods:
                cell = cfg.for_cell(pipeline, method)
                prune_steps = cell.steps("prune", n)
                protocols[f"{pipeline}/{method}"] = {
                    **cell.protocol(pipeline, method), "prune_steps": prune_steps, "ft_steps": cell.steps("ft", n),
                    "eval_every": cell.resolved_eval_every(prune_steps), "lr": cell.lr, "lr_scores": cell.lr_scores,
                    "warmup_steps": cell.warmup_steps, "phases": self._phases(pipeline, method, metric)}
        return {**dataclasses.asdict(cfg), "resolved": resolved, "protocols": protocols}

    @staticmethod
    def _weight_training_phase(cell: SRNetConfig, steps, metric: str) -> dict:
        return {"steps": steps, "lr": cell.lr, "warmup_steps": cell.warmup_steps, "clip": cell.clip_mode,
                "select": cell.ft_select, "eval_every": cell.ft_eval_every or "a tenth of the run",
                "ties": "earlier step", "metric": metric}

    def _phases(self, pipeline: str, method: str, metric: str) -> dict:
        """search (how the mask is found), ticket ((b): the separate fine-tuning) and selection."""
        cfg, n = self.base_cfg, len(self.data.train)
        cell = cfg.for_cell(pipeline, method)
        protocol = cell.protocol(pipeline, method)
        start = {"ft_prune": f"the dense model fine-tuned with {cell.prune_start}",
                 "oracle": "the CE fine-tuned model"}.get(pipeline, "the pre-trained model")
        if pipeline == "prune_ft" and method == "mask" and cell.prune_ft_masks == "ft_prune_poe":
            search = {"masks": "ft_prune/mask with loss poe (the CE fine-tuned model), reused"}
        elif method == "imp":
            rounds = cell.steps("prune", n)
            search = {"start": start, "loss": cell.imp_search_loss if pipeline == "prune_ft" else "same",
                      "round_steps": rounds, "lr": cell.lr, "warmup_steps": cell.warmup_steps,
                      "lr_horizon": cell.imp_schedule_steps(rounds) or rounds, "clip": cell.clip_mode,
                      "classifier_masked": protocol["mask_classifier"], "rewind": protocol["rewind"],
                      "per_round": cell.imp_per_round, "first_step": "prune"}
        else:
            steps = cell.steps("prune", n)
            search = {"start": start, "loss": "ce" if pipeline == "oracle" else "same", "steps": steps,
                      "lr_scores": cell.lr_scores, "warmup_steps": cell.warmup_steps, "clip": cell.clip_mode,
                      "classifier_masked": protocol["mask_classifier"], "reset_every": cell.reset_every,
                      "initial_sparsity": cell.initial_sparsity or "the target"}
            if pipeline == "oracle":
                search.update(data=cell.oracle_data, oracle_task=cell.oracle_task or cell.ood_task,
                              oracle_split=cell.oracle_split, oracle_repeat=cell.oracle_repeat,
                              oracle_extra=cell.oracle_extra,
                              steps="epochs over ID + OOD train" if cell.prune_epochs else steps)
        phases = {"search": search}
        if method == "mask":
            steps = cell.steps("prune", n)
            phases["selection"] = {"mask": cell.select, "after": cell.select_after,
                                   "eval_every": cell.resolved_eval_every(steps), "ties": cell.select_ties,
                                   "metric": metric}
        elif pipeline == "ft_prune" or cell.prune_ft_ticket == "round":
            phases["selection"] = {"level": "the model at the end of its round"}
        if pipeline == "prune_ft" and (method == "mask" or cell.prune_ft_ticket == "finetune"):
            ticket = cfg.for_cell(pipeline, method, "ticket")
            phases["ticket"] = {"start": "the pre-trained weights and the initial head (same seed), masks fixed",
                                "classifier_masked": ticket.mask_classifier != "no",
                                **self._weight_training_phase(
                                    ticket, {loss: ticket.steps("ft", n, loss) for loss in cfg.losses}, metric)}
            phases["selection"] = {"ticket": ticket.ft_select, "metric": metric}
        return phases

    def check_resumable(self) -> None:
        """Refuse to mix cells computed under a different config into one table."""
        path = self._path("config.json")
        if not os.path.isfile(path):
            return
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        new = dataclasses.asdict(self.base_cfg)
        changed = sorted(k for k in new if k not in self.SWEEP_FIELDS and k in old and old[k] != new[k])
        if changed:
            raise UsageError(f"--out: {self.cfg.out} holds results of a run with different settings "
                             f"({', '.join(changed)}); use another --out or delete it")

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
