"""The registry and checkpoint loading: types, sha256, and clear errors for missing or wrong weights.

The checkpoints here hold random weights (see conftest): they test loading, not quality.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.sam.config import SamConfig
from pipeline.sam.errors import CheckpointError, SamError
from pipeline.sam.model import SAM_SPECS, sam_model_registry

ROOT = Path(__file__).resolve().parents[3]


def test_registry_names_and_dimensions() -> None:
    assert set(SAM_SPECS) == {"vit_h", "vit_l", "vit_b", "vit_tiny_test"}
    assert set(sam_model_registry) == set(SAM_SPECS)
    assert SAM_SPECS["vit_h"].encoder_embed_dim == 1280 and SAM_SPECS["vit_h"].encoder_depth == 32
    assert SAM_SPECS["vit_b"].encoder_global_attn_indexes == (2, 5, 8, 11)
    tiny = SAM_SPECS["vit_tiny_test"]
    assert (tiny.image_size, tiny.patch_size, tiny.encoder_embed_dim, tiny.prompt_embed_dim) == (256, 16, 64, 64)
    assert tiny.embedding_size == 16 and SAM_SPECS["vit_l"].embedding_size == 64


def test_config_validates_type_and_device(tmp_path: Path) -> None:
    ckpt = tmp_path / "x.pth"
    assert SamConfig(checkpoint=ckpt).model_type == "auto"
    with pytest.raises(ValidationError, match="unknown SAM model type 'vit_x'"):
        SamConfig(checkpoint=ckpt, model_type="vit_x")
    with pytest.raises(ValidationError, match="device must be"):
        SamConfig(checkpoint=ckpt, device="tpu")
    assert SamConfig(checkpoint=ckpt, device="cuda:1").device == "cuda:1"
    with pytest.raises(ValidationError):
        SamConfig(checkpoint=ckpt, batch_size=0)
    a, b = SamConfig(checkpoint=ckpt), SamConfig(checkpoint=ckpt, batch_size=8)
    assert a.digest() != b.digest() and len(a.digest()) == 16


def test_build_tiny_matches_segment_anything_classes() -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("segment_anything")
    from segment_anything.modeling import Sam

    model = sam_model_registry["vit_tiny_test"]()
    assert isinstance(model, Sam) and not model.training
    with torch.inference_mode():
        emb = model.image_encoder(torch.zeros(2, 3, 256, 256))
    assert tuple(emb.shape) == (2, 64, 16, 16)  # B × prompt dim × (256 / 16)²


def test_load_records_type_and_sha256(tiny_config: SamConfig, tiny_checkpoint: Path) -> None:
    from pipeline.sam.model import load_sam

    model, info = load_sam(tiny_config)
    sha = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert info.sha256 == sha
    assert info.model_type == "vit_tiny_test" and info.device == "cpu" and info.image_size == 256
    assert info.mask_model == f"sam:vit_tiny_test:sha256:{sha[:16]}"
    assert model.image_encoder.img_size == 256


def test_check_checkpoint_without_building(tiny_config: SamConfig, tiny_checkpoint: Path) -> None:
    from pipeline.sam.model import check_checkpoint

    sha = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert check_checkpoint(tiny_config) == ("vit_tiny_test", f"sam:vit_tiny_test:sha256:{sha[:16]}")
    with pytest.raises(CheckpointError, match="not the requested vit_h"):
        check_checkpoint(tiny_config.model_copy(update={"model_type": "vit_h"}))


def test_legacy_checkpoint_format_loads(tmp_path: Path, tiny_checkpoint: Path) -> None:
    torch = pytest.importorskip("torch")
    from pipeline.sam.model import load_sam

    legacy = tmp_path / "legacy.pth"
    torch.save(torch.load(tiny_checkpoint, weights_only=True), legacy, _use_new_zipfile_serialization=False)
    _, info = load_sam(SamConfig(checkpoint=legacy, device="cpu"))
    assert info.model_type == "vit_tiny_test"


def test_auto_model_type_reads_the_checkpoint(tiny_config: SamConfig) -> None:
    from pipeline.sam.model import load_sam

    _, info = load_sam(tiny_config.model_copy(update={"model_type": "auto"}))
    assert info.model_type == "vit_tiny_test"


def test_missing_checkpoint_names_the_file_and_downloads_nothing(tmp_path: Path) -> None:
    from pipeline.sam.model import load_sam

    missing = tmp_path / "weights" / "sam_vit_h_4b8939.pth"
    with pytest.raises(CheckpointError) as err:
        load_sam(SamConfig(checkpoint=missing, device="cpu"))
    assert str(missing) in str(err.value) and "not found" in str(err.value)
    assert "not downloaded" in str(err.value)
    assert not missing.parent.exists()  # nothing was fetched or created
    with pytest.raises(CheckpointError, match="is a folder"):
        load_sam(SamConfig(checkpoint=tmp_path, device="cpu"))


def test_wrong_files_are_clear_errors(tmp_path: Path, tiny_checkpoint: Path) -> None:
    torch = pytest.importorskip("torch")
    from pipeline.sam.model import load_sam

    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as err:
        load_sam(SamConfig(checkpoint=text, device="cpu"))
    assert str(text) in str(err.value)

    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(tiny_checkpoint.read_bytes()[:50_000])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_sam(SamConfig(checkpoint=truncated, device="cpu"))

    other = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3)}, other)
    with pytest.raises(CheckpointError, match="not a SAM checkpoint") as err:
        load_sam(SamConfig(checkpoint=other, device="cpu"))
    assert str(other) in str(err.value)

    plain = tmp_path / "list.pth"
    torch.save([1, 2, 3], plain)
    with pytest.raises(CheckpointError, match="expected a state dict"):
        load_sam(SamConfig(checkpoint=plain, device="cpu"))


def test_wrong_model_type_for_the_checkpoint(tiny_checkpoint: Path) -> None:
    from pipeline.sam.model import load_sam

    with pytest.raises(CheckpointError) as err:
        load_sam(SamConfig(checkpoint=tiny_checkpoint, model_type="vit_b", device="cpu"))
    message = str(err.value)
    assert str(tiny_checkpoint) in message
    assert "is a vit_tiny_test SAM model" in message and "not the requested vit_b" in message


def test_damaged_state_dict_is_named(tmp_path: Path, tiny_checkpoint: Path) -> None:
    torch = pytest.importorskip("torch")
    from pipeline.sam.model import load_sam

    state = torch.load(tiny_checkpoint, weights_only=True)
    del state["mask_decoder.iou_prediction_head.layers.0.weight"]
    damaged = tmp_path / "damaged.pth"
    torch.save(state, damaged)
    with pytest.raises(CheckpointError, match="weights do not fit vit_tiny_test") as err:
        load_sam(SamConfig(checkpoint=damaged, device="cpu"))
    assert "iou_prediction_head" in str(err.value)

    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": torch.load(tiny_checkpoint, weights_only=True)}, wrapped)
    _, info = load_sam(SamConfig(checkpoint=wrapped, device="cpu"))
    assert info.model_type == "vit_tiny_test"


def test_cuda_requested_without_cuda(tiny_checkpoint: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    from pipeline.sam.model import load_sam

    with pytest.raises(SamError, match="no CUDA device"):
        load_sam(SamConfig(checkpoint=tiny_checkpoint, device="cuda"))


def test_package_imports_without_torch() -> None:
    """``import pipeline.sam`` never imports torch; using SAM without it says what to install."""
    code = (
        "import sys\n"
        "for m in ('torch', 'torchvision', 'segment_anything'):\n"
        "    sys.modules[m] = None\n"
        "import pipeline.sam as sam\n"
        "from pipeline.sam.model import load_sam\n"
        "from pipeline.sam.config import SamConfig\n"
        "try:\n"
        "    sam.SamMasker\n"
        "except ImportError as exc:\n"
        "    print('ERR', exc)\n"
        "import pathlib\n"
        "p = pathlib.Path(sys.argv[1])\n"
        "try:\n"
        "    load_sam(SamConfig(checkpoint=p))\n"
        "except ImportError as exc:\n"
        "    print('ERR2', exc)\n"
    )
    ckpt = Path(__file__)  # exists, so the missing-file check passes and the torch check is reached
    out = subprocess.run([sys.executable, "-c", code, str(ckpt)], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "ERR SAM masks need torch" in out.stdout and "install geopixeld[sam]" in out.stdout
    assert "ERR2 SAM masks need torch" in out.stdout


def test_sha256_is_memoised(tmp_path: Path) -> None:
    from pipeline.sam.model import _SHA_CACHE, file_sha256

    f = tmp_path / "w.bin"
    f.write_bytes(b"abc" * 1000)
    assert file_sha256(f) == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert any(k[0] == str(f.resolve()) for k in _SHA_CACHE)
