"""VTAB-1k on the common runner: resize + normalise (no augmentation), a timm ViT, top-1 accuracy."""
from __future__ import annotations

from typing import Any

from transformers import default_data_collator

from tasks.config.runspec import RunSpec
from tasks.training import models
from tasks.training.evaluation import EvalSplit, eval_splits
from tasks.training.job import Job, data_source


def accuracy(p: Any) -> dict[str, float]:
    from tasks.suites.metrics import vtab_metrics

    return vtab_metrics(p.predictions, p.label_ids)


def load(spec: RunSpec) -> Any:
    """train/select/report splits under the run's protocol (tasks.data.check checks them)."""
    from tasks.data.load import load_vtab

    data = spec.config["data"]
    return load_vtab(spec.dataset, data_source(spec), spec.protocol, seed=data["split_seed"],
                     **({"hub_id": data["hub_id"]} if data["hub_id"] else {}))


def prepare(spec: RunSpec, raw: Any = None) -> Job:
    from torchvision import transforms

    from tasks.facts.families import selection
    from tasks.facts.vtab import VTAB

    data, rule = spec.config["data"], selection(spec.family, spec.dataset)
    raw = load(spec) if raw is None else raw
    model, prep = models.load_image(spec.config["model"], VTAB[spec.dataset].num_classes)
    size = prep["image_size"]
    transform = transforms.Compose([
        transforms.Resize((size, size), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.ToTensor(), transforms.Normalize(prep["mean"], prep["std"])])

    def to_inputs(batch: dict[str, list]) -> dict[str, list]:
        return {"pixel_values": [transform(image.convert("RGB")) for image in batch["image"]],
                "labels": batch["label"]}

    evals, aliases = eval_splits(raw, data["eval_limit"],
                                 lambda ds: EvalSplit(ds.with_transform(to_inputs), accuracy))
    return Job(model=model, train=raw["train"].with_transform(to_inputs), evals=evals,
               collator=default_data_collator, label_names=["labels"],
               select_score=rule.score, selection_metric=rule.name, aliases=aliases)
