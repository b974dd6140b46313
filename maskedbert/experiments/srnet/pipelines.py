"""The cells of an srnet study (Liu et al. 2022): dense fine-tuning, mask training, IMP, oracle masks.

Each cell is one (pipeline, method, loss, sparsity) result, written to cells/<key>.json when it is
finished; a rerun skips finished cells. The protocol of every pipeline (which weights rewind, what
trains, how the mask is selected) comes from SRNetConfig.protocol; docs/PROTOCOLS.md gives sources.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import torch

from maskedbert import evaluation as ev
from maskedbert import losses as loss_lib
from maskedbert import pruning
from maskedbert.config import MaskConfig
from maskedbert.data.examples import Example
from maskedbert.experiments.srnet.data import oracle_label_index
from maskedbert.experiments.srnet.runner_base import SRNetBase
from maskedbert.masks import load_masks, save_masks
from maskedbert.patching import apply_masks_
from maskedbert.train.checkpoint import atomic_torch_save


def _collapsed_nli_loss(entail_index: int):
    """CE on entailment vs the rest of a multi-class head: oracle training on 2-label HANS-style data."""
    def loss_fn(logits, batch):
        log_probs = torch.log_softmax(logits, dim=1)
        others = [c for c in range(logits.shape[1]) if c != entail_index]
        binary = torch.stack([log_probs[:, entail_index], torch.logsumexp(log_probs[:, others], dim=1)], dim=1)
        return torch.nn.functional.nll_loss(binary, batch["labels"])
    return loss_fn


class SRNetRunner(SRNetBase):
    """Runs the cells of one study; `run()` runs all that the config asks for."""

    # ---- dense ------------------------------------------------------------------------------------
    def run_dense(self, loss: str) -> None:
        key = self.cell_key("finetune", "dense", loss, 0.0)
        if self.skip(key):
            return
        start = time.perf_counter()
        row = self.evaluate(self.finetuned(loss), f"dense {loss}")
        row.update(pipeline="finetune", method="dense", loss=loss, sparsity=0.0,
                   seconds=time.perf_counter() - start)
        self.record(key, row)

    # ---- mask training ----------------------------------------------------------------------------
    def mask_train_(self, model, loss: str, sparsity: float, *, protocol: dict, train_classifier: bool,
                    dataset=None, loss_fn=None, desc: str = "mask") -> tuple[float, dict]:
        """Mask training to `sparsity`: weights frozen (the head trains only if asked), scores trained
        with the straight-through estimator, the mask selected by `protocol["select"]`, and the
        result at exactly the target sparsity.

        Returns (mask change, selection record): the fraction of mask entries that differ from the
        initial magnitude mask (0 means training changed nothing: the result is magnitude pruning).
        """
        cfg, steps = self.cfg, self.prune_steps
        initial = cfg.start_sparsity(sparsity)
        soft = cfg.score_init == "magnitude_soft"
        # magnitude: scores 2*tau for the kept top |W| and 0 for the rest; magnitude_soft: scores |W| with
        # each threshold at the k-th |W| (set by exact_sparsity_ below), so the initial sparsity is exact
        apply_masks_(model, MaskConfig(mode="scores", threshold=cfg.threshold, score_init=cfg.score_init,
                                       sparsity=0.0 if soft else initial, scope="layer" if soft else cfg.scope,
                                       mask_classifier=protocol["mask_classifier"], train_classifier=train_classifier))
        if soft:
            pruning.exact_sparsity_(model, initial, cfg.scope)
        schedule = pruning.CubicSparsitySchedule.for_training(steps, initial, sparsity, ramp_end_fraction=cfg.ramp_end)
        # the init already has the initial sparsity; the first threshold reset comes after reset_every
        # steps, as in the reference (a reset at step 0 would move tau from 1e-2 to the tied value 0)
        controller = pruning.MaskSparsityController(model, schedule, method=cfg.sparsity_method,
                                                    reset_every=cfg.reset_every, scope=cfg.scope)
        selector = pruning.BestMaskSelector(model, lambda m: self.dev_metric(m, f"{desc}: select on ID dev"),
                                            total_steps=steps, every=cfg.resolved_eval_every(steps),
                                            after=cfg.select_after, mode=protocol["select"], ties=cfg.select_ties)
        layers = pruning.masked_modules(model)
        initial_masks = {name: layer.mask().clone() for name, layer in layers.items()}

        def on_step(step):
            controller(step)
            selector(step)

        # resumable: the controller's and selector's state ride in the checkpoint with the scores
        self.train(model, loss, steps, desc, dataset=dataset, loss_fn=loss_fn, step_callback=on_step, resume=True,
                   stateful={"sparsity_controller": controller, "mask_selector": selector})
        selection = selector.restore()
        controller.finalize()
        changed = sum(int((layer.mask() != initial_masks[name]).sum()) for name, layer in layers.items())
        return changed / sum(m.numel() for m in initial_masks.values()), selection

    def finetune_ticket(self, pipeline: str, method: str, loss: str, masks, key: str):
        """(b)'s ticket fine-tuning: the pre-trained weights and the initial head (drawn after the same
        seed, so the search run's own), the masks fixed, the weights trained with `loss` for the ticket
        phase's steps (`ft_epochs_by_loss` counted), the best dev checkpoint kept. The ticket phase's
        settings are the cell's with the "<pipeline>/<method>/ticket" overrides (a preset's retraining
        scripts). `masks`: {layer: mask} or a save_masks file. Returns (model, selection, steps)."""
        cfg = self.base_cfg.for_cell(pipeline, method, "ticket")
        model = self.fresh_model()
        apply_masks_(model, MaskConfig(mode="fixed", train_weights=True, scope=cfg.scope,
                                       mask_classifier=cfg.mask_classifier != "no",
                                       train_classifier=cfg.train_classifier != "no"))
        if isinstance(masks, str):
            load_masks(model, masks, strict=False)  # a head the ticket leaves unmasked is skipped
        else:
            for name, layer in pruning.masked_modules(model).items():
                if name in masks:
                    layer.set_mask_(masks[name])
        steps = cfg.steps("ft", len(self.data.train), loss)
        selection = self.train_selecting(model, loss, steps, f"{key} ticket", cfg=cfg, dataset=self.train_dataset(loss),
                                         resume=True)
        return model, selection, steps

    def pruning_start(self, loss: str):
        """The model pipeline (a) prunes: fine-tuned with `loss`, with CE, or loaded from a checkpoint."""
        if self.cfg.prune_start == "same_loss":
            return self.finetuned(loss)
        if self.cfg.prune_start == "ce":
            return self.finetuned("ce")
        model = self.fresh_model()
        pruning.rewind_weights_(model, pruning.load_rewind_state(self.cfg.prune_start), rewind_classifier=True)
        return model

    def run_mask_cell(self, pipeline: str, loss: str, sparsity: float) -> None:
        key = self.cell_key(pipeline, "mask", loss, sparsity)
        if self.skip(key):
            return
        with self.cell_scope(pipeline, "mask"):
            self._mask_cell(pipeline, loss, sparsity, key)

    def _mask_cell(self, pipeline: str, loss: str, sparsity: float, key: str) -> None:
        start = time.perf_counter()
        protocol = self.cfg.protocol(pipeline, "mask")
        extra = {}
        if pipeline == "prune_ft" and self.cfg.prune_ft_masks == "ft_prune_poe":
            masks = self.ft_prune_poe_masks(sparsity)
            extra["mask_from"] = self.cell_key("ft_prune", "mask", "poe", sparsity)
            change, selection = None, {"selected_step": None, "selected_metric": None}
        else:
            head_trains = protocol["train_classifier_mask_training"]
            model = self.pruning_start(loss) if pipeline == "ft_prune" else self.fresh_model()
            change, selection = self.mask_train_(model, loss, sparsity, protocol=protocol,
                                                 train_classifier=head_trains, desc=key)
            masks = {n: m.mask().clone() for n, m in pruning.masked_modules(model).items()}
        if pipeline == "prune_ft":
            model, ticket, steps = self.finetune_ticket(pipeline, "mask", loss, masks, key)
            extra.update(ticket_steps=steps, ticket_selected_step=ticket["selected_step"],
                         ticket_selected_metric=ticket["selected_metric"])
        row = self.evaluate(model, key)
        row.update(pipeline=pipeline, method="mask", loss=loss, sparsity=sparsity, mask_change=change,
                   selected_step=selection["selected_step"], selected_metric=selection["selected_metric"],
                   seconds=time.perf_counter() - start, **extra)
        self.record(key, row, model)

    def ft_prune_poe_masks(self, sparsity: float) -> str:
        """The masks of (a)'s PoE mask training on the CE fine-tuned model at `sparsity` (the reference's
        (b) with mask training reuses them, README.md:154): that cell's mask file, run first if needed."""
        key = self.cell_key("ft_prune", "mask", "poe", sparsity)
        if not self.done(key):
            with self.cell_scope("ft_prune", "mask"):  # restores this cell's settings afterwards
                self.cfg = dataclasses.replace(self.cfg, prune_start="ce")  # the masks of the CE model
                self._mask_cell("ft_prune", "poe", sparsity, key)
        return self._path("masks", key + ".safetensors")

    # ---- IMP ------------------------------------------------------------------------------------------
    def run_imp_sequence(self, pipeline: str, loss: str) -> None:
        """One IMP run to the largest sweep sparsity; every sweep level is trained once and evaluated.

        Round 0 prunes without training (a: the model is fine-tuned already; b: the paper prunes the
        pre-trained weights first). Round r >= 1 trains the level-(r-1) subnetwork - from the weights the
        last round trained (a, no rewinding) or from the rewound pre-trained weights (b) - and that
        training is its evaluation; one more training evaluates the last level.
        """
        keys = {s: self.cell_key(pipeline, "imp", loss, s) for s in self.cfg.sparsities}
        if all([self.skip(k) for k in keys.values()]):
            return
        with self.cell_scope(pipeline, "imp") as cfg:
            self._imp_sequence(pipeline, loss, keys, cfg)

    def _imp_sequence(self, pipeline: str, loss: str, keys: dict, cfg) -> None:
        start = time.perf_counter()
        tickets = pipeline == "prune_ft" and cfg.prune_ft_ticket == "finetune"
        if not tickets:  # each level's number is the IMP round that trains it
            def evaluate_level(m, level):
                if level in keys and not self.done(keys[level]):
                    row = self.evaluate(m, keys[level])
                    row.update(pipeline=pipeline, method="imp", loss=loss, sparsity=level,
                               seconds=time.perf_counter() - start)
                    self.record(keys[level], row, m)

            self._imp_search(pipeline, loss, loss, cfg, evaluate_level)
            return
        # (b): search the masks (the search loss, e.g. PoE for every cell), then fine-tune each ticket
        search_loss = loss if cfg.imp_search_loss == "same" else cfg.imp_search_loss
        mask_files = self._imp_search(pipeline, search_loss, loss, cfg, None)
        for level in cfg.sparsities:
            if self.done(keys[level]):
                continue
            level_start = time.perf_counter()
            model, ticket, steps = self.finetune_ticket(pipeline, "imp", loss, mask_files[level], keys[level])
            row = self.evaluate(model, keys[level])
            row.update(pipeline=pipeline, method="imp", loss=loss, sparsity=level, search_loss=search_loss,
                       ticket_steps=steps, ticket_selected_step=ticket["selected_step"],
                       ticket_selected_metric=ticket["selected_metric"],
                       seconds=time.perf_counter() - level_start)
            self.record(keys[level], row, model)

    def _imp_search(self, pipeline: str, search_loss: str, cell_loss: str, cfg, evaluate_level) -> dict:
        """The IMP rounds with `search_loss`; returns {level: mask file}. evaluate_level(model, level)
        sees each level after its round of training (None: a mask search only, whose level files are
        kept and reused by every cell with the same search)."""
        protocol = cfg.protocol(pipeline, "imp")
        levels = sorted(set(pruning.imp_sparsity_levels(max(cfg.sparsities), cfg.imp_per_round, cfg.imp_amount_of))
                        | set(cfg.sparsities))
        name = f"{pipeline}-imp-{cell_loss}" if evaluate_level is not None else f"{pipeline}-imp-search-{search_loss}"
        mask_files = {level: self._path("masks", f"{name}-level{level:.2f}.safetensors") for level in levels}
        resume_path = self._path("resume", f"{name}.pt")
        if evaluate_level is None and not os.path.isfile(resume_path) and all(
                os.path.isfile(mask_files[s]) for s in cfg.sparsities):
            return mask_files  # an earlier cell ran this search
        model = self.pruning_start(cell_loss) if pipeline == "ft_prune" else self.fresh_model()
        rewind = protocol["rewind"] != "none"
        rewind_state = pruning.load_rewind_state(protocol["rewind_to"]) if protocol["rewind_to"] else None
        apply_masks_(model, MaskConfig(mode="fixed", train_weights=True, scope=cfg.scope,
                                       mask_classifier=protocol["mask_classifier"], train_classifier=True))
        current = {"level": 0.0}
        dataset = self.train_dataset(search_loss)
        # after every round: the pruned (rewound) model and the rewind state, so an interrupted
        # sequence resumes at its next round instead of round 0
        start_round = 0
        saved = None
        if os.path.isfile(resume_path):
            try:
                saved = torch.load(resume_path, map_location="cpu", weights_only=True)
                missing = {"model", "rewind", "next_round", "level"} - set(saved)
                if missing:
                    raise KeyError(f"no {sorted(missing)} in it")
            except Exception as exc:  # truncated, emptied, or not ours: set aside, the sequence starts over
                self._set_aside(resume_path, exc)
                saved = None
        if saved is not None:
            model.load_state_dict(saved["model"])
            rewind_state, start_round, current["level"] = saved["rewind"], saved["next_round"], saved["level"]
            self.log(f"IMP {name}: resuming at round {start_round} (level {current['level']:.2f})")
        elif rewind and rewind_state is None:
            rewind_state = pruning.snapshot_weights(model)
        # each round: a fresh AdamW and LR schedule, over the whole budget (imp_schedule "budget") or the round
        horizon = cfg.imp_schedule_steps(self.prune_steps)

        def train_round(m, r):
            if r == 0 and protocol["skip_first_training"]:
                return
            self.train(m, search_loss, self.prune_steps, f"IMP {pipeline} {search_loss} round {r}", dataset=dataset,
                       schedule_steps=horizon)
            if evaluate_level is not None:
                evaluate_level(m, current["level"])

        def on_level(m, level, r):
            current["level"] = level
            save_masks(m, mask_files[level])
            state = {k: v.detach().cpu() for k, v in m.state_dict().items()}
            atomic_torch_save({"model": state, "rewind": rewind_state, "next_round": r + 1, "level": level},
                              resume_path)

        pruning.iterative_magnitude_pruning(model, train_round, levels, scope=cfg.scope, rewind_state=rewind_state,
                                            rewind_classifier=protocol["rewind_classifier"], on_level=on_level,
                                            start_round=start_round, rewind=rewind)
        if evaluate_level is not None:
            train_round(model, len(levels))  # train and evaluate the last level
        os.unlink(resume_path)  # every level is recorded (or its mask saved) now
        return mask_files

    # ---- oracle -----------------------------------------------------------------------------------
    def run_oracle_cell(self, sparsity: float) -> None:
        key = self.cell_key("oracle", "mask", "ce", sparsity)
        if self.skip(key) or not self.data.ood_train:
            return
        with self.cell_scope("oracle", "mask"):
            self._oracle_cell(sparsity, key)

    def _oracle_cell(self, sparsity: float, key: str) -> None:
        start = time.perf_counter()
        protocol = self.cfg.protocol("oracle", "mask")
        model = self.finetuned("ce")
        if self.cfg.oracle_data == "id+ood":  # the reference's oracle: ID and OOD training data together, CE
            kind, names = self.data.oracle_kind, self.data.label_names
            ood = [Example(e.id, e.text_a, e.text_b, oracle_label_index(kind, int(e.label), names), e.meta)
                   for e in self.data.ood_train]
            dataset, loss_fn = self._encode(list(self.data.train) + ood, self.label_map), loss_lib.make_loss_fn("ce")
            self.prune_steps = self.cfg.steps("prune", len(dataset))  # epochs over both sets (cell_scope restores)
        elif self.data.ood_kind == "hans":
            entail = self.model_names.index(next(n for n in self.model_names if ev.normalize_name(n) == "entailment"))
            dataset, loss_fn = self._encode(self.data.ood_train, None), _collapsed_nli_loss(entail)
        else:
            dataset, loss_fn = self._encode(self.data.ood_train, None), loss_lib.make_loss_fn("ce")
        change, selection = self.mask_train_(model, "ce", sparsity, protocol=protocol,
                                             train_classifier=protocol["train_classifier_mask_training"],
                                             dataset=dataset, loss_fn=loss_fn, desc=key)
        row = self.evaluate(model, key)
        row.update(pipeline="oracle", method="mask", loss="ce", sparsity=sparsity, mask_change=change,
                   selected_step=selection["selected_step"], selected_metric=selection["selected_metric"],
                   seconds=time.perf_counter() - start)
        self.record(key, row, model)

    # ---- the whole study --------------------------------------------------------------------------
    def run(self) -> list[dict]:
        cfg = self.cfg
        self.check_resumable()
        ev.write_text_atomic(self._path("config.json"), json.dumps(self.resolved_config(), indent=2, sort_keys=True))
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
