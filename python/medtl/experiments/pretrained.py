"""Initial weights of transfer-learning runs: model-zoo, user-given or kit-pre-trained."""

from __future__ import annotations

from pathlib import Path

from medtl import io, zoo
from medtl.config import to_dict
from medtl.errors import ConfigError, MissingFileError
from medtl.experiments.source_task import pretrain
from medtl.experiments.spec import Experiment, WeightsFile
from medtl.experiments.study import short_key
from medtl.nets.registry import get_model
from medtl.paths import models_dir, resolve, results_root, shown
from medtl.protocols import Configuration
from medtl.surgery import TransplantError, transplant

SYNTHETIC = "synthetic-source"


def source_weights(experiment: Experiment, model_name: str, *, progress: bool = True
                   ) -> tuple[Path, Path, tuple[str, ...], str]:
    """(definition, caffemodel, source layers not to carry over, description)."""
    spec = experiment.pretrained
    source = spec.weights[model_name]          # the plan checked every needed entry
    if source == SYNTHETIC:
        model = get_model(model_name)
        task = spec.source_task
        dest = (results_root() / "datasets" / "source_models"
                / f"{model_name}_{short_key(to_dict(task))}")
        definition, weights = pretrain(model, dest, task, progress=progress)
        return definition, weights, model.classifiers, "pre-trained by the kit on synthetic shapes"
    if isinstance(source, WeightsFile):
        definition = resolve(source.definition, experiment.folder)
        weights = resolve(source.weights, experiment.folder)
        return definition, weights, tuple(source.drop), f"user weights {shown(weights)}"
    z = zoo.get(source)
    dirs = ([resolve(d, experiment.folder) for d in spec.search_dirs] if spec.search_dirs
            else [models_dir()])
    return z.definition_path(), zoo.weights_path(z, dirs), z.classifiers, f"model zoo {z.name}"


def check_source_weights(experiment: Experiment, configs: list[Configuration]) -> None:
    """The model-zoo and user weights the configurations start from are in place (before
    hours of dataset building)."""
    for model in sorted({c.model for c in configs if c.policy.init.value == "pretrained"}):
        source = experiment.pretrained.weights[model]
        if source == SYNTHETIC:
            continue
        if isinstance(source, WeightsFile):
            for name in (source.weights, source.definition):
                if not resolve(name, experiment.folder).is_file():
                    raise MissingFileError(f"{experiment.path}: pretrained.weights.{model}: "
                                           f"{resolve(name, experiment.folder)} does not exist")
        else:
            source_weights(experiment, model)


def initial_weights(experiment: Experiment, cfg: Configuration, train_net: Path, dest: Path,
                    *, seed: int, progress: bool = True) -> Path:
    """The run's starting caffemodel: source weights transplanted, classifiers fresh."""
    if dest.is_file():
        return dest
    definition, weights, drop, how = source_weights(experiment, cfg.model, progress=progress)
    model = get_model(cfg.model)
    try:
        report = transplant(definition, weights, train_net, dest, fresh=model.classifiers,
                            drop=drop, seed=seed)
    except TransplantError as exc:
        raise ConfigError(str(exc.advised(
            f"Name the source layers that should not carry over in "
            f"pretrained.weights.{cfg.model}.drop of {shown(experiment.path)}"))) from None
    record = report.to_dict() | {"source": how, "definition": str(definition),
                                 "weights": str(weights)}
    io.write_json(dest.with_name("transplant.json"), record)
    return dest
