"""The Lightning CLI that runs the recipes: ``vividtalk fit / validate / test / predict``.

Two changes to pytorch_lightning's ``LightningCLI``, both about ``--ckpt_path``:

* The hyperparameters stored in the checkpoint fill in what the arguments leave unset, and
  what the ``--config`` files and the command line give wins. ``LightningCLI`` (2.x,
  ``_parse_ckpt_path``) parses them *over* the parsed arguments instead, so that an override
  given while resuming (``--model.init_args.image_every 50``) is silently undone.
* The checkpoint is read as tensors only (``weights_only=True``) whatever torch's default
  (``False`` before torch 2.6, or with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``): a checkpoint
  is a pickle, and unpickling anything else can run code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from pytorch_lightning.cli import LightningCLI


def checkpoint_model_spec(ckpt_path: str | Path | None) -> dict | None:
    """The ``model`` entry (``class_path`` + the stored arguments) that a Lightning checkpoint's
    hyperparameters describe, read as tensors only; None without a file or hyperparameters.
    The same conversion as ``LightningCLI._parse_ckpt_path``."""
    if not ckpt_path or not Path(ckpt_path).is_file():
        return None
    hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
    hparams.pop("_instantiator", None)
    if not hparams:
        return None
    if "_class_path" in hparams:  # saved by the CLI's instantiator: the arguments beside the class
        return {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
    return hparams


class StageCLI(LightningCLI):
    """``LightningCLI`` whose ``--ckpt_path`` hyperparameters are defaults, not overrides, and
    whose checkpoints are read as tensors only (see the module's docstring)."""

    def parse_arguments(self, parser, args) -> None:
        self._args = args  # kept: _parse_ckpt_path parses them again
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """The checkpoint's hyperparameters become the defaults of the subcommand's ``model``
        and the arguments are parsed again on top of them (replaces LightningCLI's, which
        parses the hyperparameters over the arguments)."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        spec = checkpoint_model_spec(self.config[subcommand].get("ckpt_path"))
        if spec is None:
            return
        self._subcommand_parsers[subcommand].set_defaults(model=spec)
        try:
            self.config = _parse(self.parser, self._args)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise

    def before_instantiate_classes(self) -> None:
        # The trainer reads --ckpt_path again (weights, optimiser and loop states): tensors only,
        # unless asked otherwise with --weights_only false.
        subcommand = self.config.get("subcommand")
        if subcommand and "weights_only" in self.config[subcommand] and self.config[subcommand].weights_only is None:
            self.config[subcommand].weights_only = True


def _parse(parser, args: Any):
    """``args`` parsed as ``LightningCLI.parse_arguments`` does (without its warning again)."""
    return parser.parse_object(args) if isinstance(args, (dict, Namespace)) else parser.parse_args(args)
