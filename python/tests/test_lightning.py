"""EmberFSCheckpointIO with a real pytorch-lightning Trainer on CPU."""

import os

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

import emberfs.checkpoint as ckpt
from emberfs.checkpoint.lightning import EmberFSCheckpointIO


class Tiny(pl.LightningModule):
    def __init__(self, width=8):
        super().__init__()
        self.save_hyperparameters()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.ReLU(), torch.nn.Linear(width, 1))
        self.steps_run = 0

    def training_step(self, batch, _):
        x, y = batch
        self.steps_run += 1
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def _trainer(dirpath, fs, epochs):
    return pl.Trainer(
        accelerator="cpu", max_epochs=epochs, logger=False, enable_progress_bar=False,
        enable_model_summary=False, plugins=[EmberFSCheckpointIO(client=fs)],
        callbacks=[ModelCheckpoint(dirpath=dirpath, save_top_k=1, monitor="step", mode="max", save_last=True)],
    )


def test_trainer_saves_resumes_and_removes_on_emberfs(fs, tmp_path):
    dirpath = str(tmp_path / "ckpts")  # the same path names the EmberFS directory
    torch.manual_seed(0)
    model = Tiny()
    _trainer(dirpath, fs, 1).fit(model, _data())
    names = sorted(n for n in fs.listdir(dirpath) if n != "latest")
    assert names == ["epoch=0-step=4.ckpt", "last.ckpt"]
    assert not any(p.is_file() for p in (tmp_path / "ckpts").rglob("*"))  # nothing on local disk
    back = ckpt.load(f"{dirpath}/epoch=0-step=4.ckpt", client=fs, weights_only=False)
    assert back["global_step"] == 4 and back["epoch"] == 0
    for k, v in model.state_dict().items():
        assert torch.equal(back["state_dict"][k], v), k
    assert back["hyper_parameters"]["width"] == 8

    # resume from EmberFS for a second epoch: top-1 removes the epoch-0 checkpoint
    model2 = Tiny()
    t2 = _trainer(dirpath, fs, 2)
    t2.fit(model2, _data(), ckpt_path=f"{dirpath}/last.ckpt")
    assert t2.global_step == 8
    assert model2.steps_run == 4  # only the second epoch ran: the first came from the checkpoint
    names = sorted(n for n in fs.listdir(dirpath) if n != "latest")
    assert names == ["epoch=1-step=8.ckpt", "last.ckpt"]
    last = ckpt.load(f"{dirpath}/last.ckpt", client=fs, weights_only=False)
    assert last["global_step"] == 8
    assert not os.path.exists(f"{dirpath}/last.ckpt")
