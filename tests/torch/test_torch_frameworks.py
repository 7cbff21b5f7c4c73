"""Round trips through the training frameworks users put the optimizer in: Lightning and
Hugging Face's Trainer save the optimizer with the model and resume from it. Optional:
each test is skipped when its framework is not installed (CI installs neither)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from torch_cases import HYPER, batches

torch = pytest.importorskip("torch")

import mlbfgs.torch as mt  # noqa: E402


def _net() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))


def test_lightning_checkpoint_resume_is_bitwise(tmp_path: Path) -> None:
    lightning = pytest.importorskip("lightning")
    data = batches(6)  # one epoch: the checkpoint is taken at an epoch boundary

    class Module(lightning.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _net()

        def training_step(self, batch: Any, index: int) -> Any:
            x, y = batch
            return ((self.net(x) - y) ** 2).mean()

        def configure_optimizers(self) -> Any:
            return mt.MLBFGS(self.parameters(), lr=0.05, **HYPER)

    def fit(ckpt: Path | None = None) -> Any:
        """12 steps (two epochs); the first run checkpoints after 6 from a callback."""
        callbacks = (
            []
            if ckpt
            else [
                lightning.pytorch.callbacks.ModelCheckpoint(
                    dirpath=tmp_path, every_n_train_steps=6, save_top_k=-1, filename="{step}"
                )
            ]
        )
        trainer = lightning.Trainer(
            max_steps=12,
            logger=False,
            callbacks=callbacks,
            enable_checkpointing=not ckpt,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
            devices=1,
        )
        module = Module()
        loader = torch.utils.data.DataLoader(data, batch_size=None)
        trainer.fit(module, loader, ckpt_path=str(ckpt) if ckpt else None)
        return module

    straight = fit()
    resumed = fit(tmp_path / "step=6.ckpt")
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)


def test_hugging_face_trainer_resume_is_bitwise(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    data = [{"x": x[i], "y": y[i]} for x, y in batches(4) for i in range(16)]

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _net()

        def forward(self, x: Any, y: Any) -> dict[str, Any]:
            return {"loss": ((self.net(x) - y) ** 2).mean()}

    def train(steps: int, resume: bool) -> Any:
        model = Model()
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / "out"),
            max_steps=steps,
            per_device_train_batch_size=16,
            save_steps=4,
            save_strategy="steps",
            logging_strategy="no",
            report_to=[],
            use_cpu=True,
            seed=0,
            data_seed=0,
            lr_scheduler_type="constant",
            dataloader_drop_last=True,
        )
        trainer = transformers.Trainer(
            model=model,
            args=args,
            train_dataset=data,
            optimizers=(mt.MLBFGS(model.parameters(), lr=0.05, **HYPER), None),
        )
        trainer.train(resume_from_checkpoint=resume or None)
        return model

    train(4, resume=False)  # writes checkpoint-4
    resumed = train(8, resume=True)
    straight = train(8, resume=False)
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
