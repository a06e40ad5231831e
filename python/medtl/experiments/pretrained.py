"""Initial weights of transfer-learning runs: model-zoo, user-given or kit-pre-trained."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from medtl import zoo
from medtl.config import ConfigError
from medtl.experiments.spec import REPO, Experiment
from medtl.nets.registry import get_model
from medtl.protocols import Configuration
from medtl.surgery import transplant

SYNTHETIC = "synthetic-source"


def source_weights(experiment: Experiment, model_name: str, *, progress: bool = True
                   ) -> tuple[Path, Path, tuple[str, ...], str]:
    """(definition, caffemodel, source layers not to carry over, description)."""
    spec = experiment.pretrained
    source = spec.weights.get(model_name)
    if source is None:
        hint = ""
        model = get_model(model_name)
        if model.zoo_model:
            z = zoo.get(model.zoo_model)
            hint = (f"; e.g. {model_name}: {z.name} (download {z.url}, sha1 "
                    f"{z.sha1 or 'not published'})")
        raise ConfigError(f"{experiment.path}: pretrained.weights has no entry for "
                          f"{model_name}, which a transfer-learning configuration needs{hint}")
    if source == SYNTHETIC:
        from medtl.config import from_mapping
        from medtl.experiments.source_task import SourceTask, pretrain

        model = get_model(model_name)
        task = from_mapping(SourceTask, spec.source_task,
                            where=f"{experiment.path}: pretrained.source_task")
        key = hashlib.sha256(json.dumps(asdict(task), sort_keys=True).encode()).hexdigest()
        dest = experiment.results_dir / "source" / f"{model_name}_{key[:10]}"
        definition, weights = pretrain(model, dest, task, progress=progress)
        return definition, weights, model.classifiers, "pre-trained by the kit on synthetic shapes"
    if isinstance(source, dict):
        unknown = sorted(set(source) - {"weights", "definition", "drop"})
        if unknown or not {"weights", "definition"} <= set(source):
            raise ConfigError(f"{experiment.path}: pretrained.weights.{model_name}: give "
                              "weights and definition (and optionally drop)")
        base = experiment.path.parent
        return (base / source["definition"], base / source["weights"],
                tuple(source.get("drop", ())), f"user weights {source['weights']}")
    z = zoo.get(source)
    dirs = [REPO / d for d in spec.search_dirs]  # relative folders: to the repository
    weights = zoo.weights_path(z, dirs)
    return z.definition_path(), weights, z.classifiers, f"model zoo {z.name}"


def initial_weights(experiment: Experiment, cfg: Configuration, train_net: Path, dest: Path,
                    *, seed: int, progress: bool = True) -> Path:
    """The run's starting caffemodel: source weights transplanted, classifiers fresh."""
    if dest.is_file():
        return dest
    definition, weights, drop, how = source_weights(experiment, cfg.model, progress=progress)
    model = get_model(cfg.model)
    report = transplant(definition, weights, train_net, dest, fresh=model.classifiers,
                        drop=drop, seed=seed)
    record = report.to_dict() | {"source": how, "definition": str(definition),
                                 "weights": str(weights)}
    dest.with_name("transplant.json").write_text(json.dumps(record, indent=2, default=str))
    return dest
