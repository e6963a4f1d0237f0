"""The weight converter (tools/convert_idm_weights.py) and the optional download helper (tools/download_models.py).

The converter runs on tiny files with IDM-VTON's exact key layout: the real key names, the real pickle / safetensors
formats. Its output must load through the pack's own loaders and sample like the original weights.
"""

from __future__ import annotations

import collections
import hashlib
import os
import pickle
import subprocess
import sys
import textwrap

import comfy_host
import pytest
import safetensors
import safetensors.torch
import torch
from tiny_models import REFERENCE_LAYOUT

TOOLS = comfy_host.REPO / "tools"
import convert_idm_weights as converter  # noqa: E402
import download_models  # noqa: E402

CONVERTER = str(TOOLS / "convert_idm_weights.py")
DOWNLOADER = str(TOOLS / "download_models.py")


def run_tool(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})}, cwd=str(comfy_host.REPO))


def convert(*args) -> int:
    return converter.main([str(a) for a in args])


def leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".partial")]


def read_safetensors(path) -> dict[str, torch.Tensor]:
    with safetensors.safe_open(str(path), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}


@pytest.fixture(scope="module")
def tryon_state(layout_repo) -> dict[str, torch.Tensor]:
    return torch.load(layout_repo / "unet" / "diffusion_pytorch_model.bin", weights_only=True)


@pytest.fixture(scope="module")
def converted(layout_repo, tmp_path_factory):
    """Both UNets of the layout repo converted: TryonNet through the real CLI, GarmentNet from the HF folder."""
    out = tmp_path_factory.mktemp("converted")
    result = run_tool(CONVERTER, str(layout_repo / "unet" / "diffusion_pytorch_model.bin"), str(out / "tryon.safetensors"))
    assert result.returncode == 0, result.stderr
    assert "TryonNet layout verified: 1871 tensors" in result.stdout and "100%" in result.stdout
    assert convert(layout_repo, out, "--kind", "garment") == 0  # HF folder in, folder out: default name
    return {"tryon": out / "tryon.safetensors", "garment": out / "IDM-VTON-GarmentNet-fp16.safetensors", "folder": out}


def test_embedded_layouts_equal_the_real_key_lists():
    for kind, reference in (("tryon", "unet.keys.tsv"), ("garment", "unet_encoder.keys.tsv")):
        names = [line.split("\t")[0] for line in (REFERENCE_LAYOUT / reference).read_text().splitlines() if line.strip()]
        layout = converter.LAYOUTS[kind]
        assert layout.key_count == len(names)
        assert layout.names_sha256 == hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()
        assert layout.part_counts == dict(collections.Counter(converter.part_of(n) for n in names))


def test_tryon_output_has_every_key_in_fp16_with_the_cast_values(converted, tryon_state):
    out = read_safetensors(converted["tryon"])
    assert list(out) == sorted(tryon_state) and len(out) == 1871
    for key, original in tryon_state.items():
        assert out[key].dtype == torch.float16, key
        assert torch.equal(out[key], original.to(torch.float16)), key
    with safetensors.safe_open(str(converted["tryon"]), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["idm_vton_part"] == "tryon" and metadata["dtype"] == "fp16"
    assert leftovers(converted["folder"]) == []


def test_garment_output_drops_the_four_stray_keys(converted, layout_repo):
    original = safetensors.torch.load_file(layout_repo / "unet_encoder" / "diffusion_pytorch_model.safetensors")
    out = read_safetensors(converted["garment"])
    assert set(original) - set(out) == set(converter.STRAY_GARMENT_KEYS)
    assert len(out) == 1676 and all(v.dtype == torch.float16 for v in out.values())
    assert all(torch.equal(out[k], original[k].half()) for k in out)


def test_converted_files_load_through_the_pack_loaders_and_compute_like_the_originals(pack, layout_repo, converted):
    """Weights equal the fp16-cast originals; TryonNet, its Resampler and GarmentNet give the same outputs (fp16 tolerance)."""
    from comfyui_tryon.models.garment_net import load_garment_model
    from comfyui_tryon.models.tryon_net import load_tryon_model
    from tiny_models import ADM_DIM, CONTEXT_DIM, VISION_WIDTH
    from tryon_setup import load_models

    original_tryon, original_garment = load_models(layout_repo)
    tryon = load_tryon_model(str(converted["tryon"]))
    garment = load_garment_model(str(converted["garment"]))
    for ours, theirs in ((tryon, original_tryon), (garment, original_garment)):
        a, b = ours.model.state_dict(), theirs.model.state_dict()
        weights = [k for k in a if k.startswith(("diffusion_model.", "ip_adapter.", "ip_resampler."))]
        assert a.keys() == b.keys() and len(weights) > 1600
        assert all(torch.equal(a[k], b[k].half().to(a[k].dtype)) for k in weights)

    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 13, 16, 16, generator=generator)
    timesteps, context = torch.tensor([999.0, 500.0]), torch.randn(2, 77, CONTEXT_DIM, generator=generator)
    adm, image_tokens = torch.randn(2, ADM_DIM, generator=generator), torch.randn(2, 257, VISION_WIDTH, generator=generator)

    def close(ours, reference):
        assert torch.isfinite(ours).all()
        assert (ours - reference).abs().max().item() <= 1e-2 * reference.abs().max().item()

    with torch.no_grad():
        close(tryon.model.diffusion_model(x, timesteps, context, adm), original_tryon.model.diffusion_model(x, timesteps, context, adm))
        close(tryon.model.ip_resampler(image_tokens), original_tryon.model.ip_resampler(image_tokens))
        close(garment.model.diffusion_model(x[:, :4], timesteps, context), original_garment.model.diffusion_model(x[:, :4], timesteps, context))


def test_refuses_to_overwrite_and_leaves_the_existing_file_untouched(layout_repo, tmp_path, capsys):
    existing = tmp_path / "tryon.safetensors"
    existing.write_bytes(b"precious bytes")
    source = layout_repo / "unet" / "diffusion_pytorch_model.bin"
    assert convert(source, existing) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == b"precious bytes"
    (tmp_path / "IDM-VTON-TryonNet-fp16.safetensors").write_bytes(b"also precious")
    assert convert(source, tmp_path) == 2  # folder destination whose default name exists
    assert (tmp_path / "IDM-VTON-TryonNet-fp16.safetensors").read_bytes() == b"also precious"
    assert leftovers(tmp_path) == []


def test_refuses_a_garment_net_given_as_tryon_and_an_sdxl_inpainting_unet(layout_repo, tryon_state, tmp_path, capsys):
    garment_file = layout_repo / "unet_encoder" / "diffusion_pytorch_model.safetensors"
    assert convert(garment_file, tmp_path / "a.safetensors", "--kind", "tryon") == 1
    assert "GarmentNet (unet_encoder/), not TryonNet. Use --kind garment" in capsys.readouterr().err
    # a 13-channel SDXL inpainting UNet without IDM's IP-Adapter parts
    plain = {k: v for k, v in tryon_state.items() if not k.startswith("encoder_hid_proj.") and "_ip." not in k}
    torch.save(plain, tmp_path / "inpaint.bin")
    assert convert(tmp_path / "inpaint.bin", tmp_path / "b.safetensors") == 1
    message = capsys.readouterr().err
    assert "not IDM-VTON's TryonNet or GarmentNet layout" in message
    assert "conv_in takes 13 input channels, GarmentNet takes 4" in message
    assert convert(tmp_path / "inpaint.bin", tmp_path / "b.safetensors", "--kind", "tryon") == 1
    message = capsys.readouterr().err
    assert "not IDM-VTON's TryonNet layout" in message
    assert "encoder_hid_proj: 0 tensors, expected 51" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inpaint.bin"]


def test_refuses_an_hf_folder_with_both_unets_unless_told_which(layout_repo, tmp_path, capsys):
    assert convert(layout_repo, tmp_path) == 2
    assert "--kind tryon or --kind garment" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


class _Exploit:
    """Pickles to a call that creates `marker` when unpickled by anything that runs code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("container", ["torch_zip", "plain_pickle"])
def test_refuses_a_malicious_pickle_without_running_it(tmp_path, capsys, container):
    marker = tmp_path / "pwned"
    source = tmp_path / "diffusion_pytorch_model.bin"
    payload = {"conv_in.weight": torch.zeros(2, 13, 3, 3), "evil": _Exploit(marker)}
    if container == "torch_zip":
        torch.save(payload, source)
    else:
        source.write_bytes(pickle.dumps(payload))
    assert convert(source, tmp_path / "out.safetensors") == 1
    assert "refused for safety" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_fp16_overflow_stops_the_conversion_and_leaves_no_file(tryon_state, tmp_path, capsys):
    state = dict(tryon_state)
    state["conv_out.bias"] = state["conv_out.bias"].clone()
    state["conv_out.bias"][0] = 1e6
    torch.save(state, tmp_path / "big_values.bin")
    assert convert(tmp_path / "big_values.bin", tmp_path / "out.safetensors") == 1
    assert "use --dtype bf16 or fp32" in capsys.readouterr().err
    assert not (tmp_path / "out.safetensors").exists() and leftovers(tmp_path) == []
    assert convert(tmp_path / "big_values.bin", tmp_path / "out.safetensors", "--dtype", "bf16") == 0
    assert read_safetensors(tmp_path / "out.safetensors")["conv_out.bias"].dtype == torch.bfloat16


def test_peak_memory_stays_near_one_tensor_not_the_file(layout_repo, tryon_state, tmp_path):
    """A 290 MB source converts within ~one 32 MB tensor of extra memory: tensors are streamed, not collected."""
    big = dict(tryon_state)
    replaced = [k for k in big if k.startswith("up_blocks.0.") and k.endswith("ff.net.2.weight")][:6]
    for index, key in enumerate(replaced):
        big[key] = torch.full((2048, 4096), float(index))
    torch.save(big, tmp_path / "big.bin")
    (tmp_path / "small.bin").symlink_to(layout_repo / "unet" / "diffusion_pytorch_model.bin")
    wrapper = textwrap.dedent("""
        import resource, runpy, sys
        sys.argv = sys.argv[1:]
        try:
            runpy.run_path(sys.argv[0], run_name="__main__")
        except SystemExit as done:
            print("EXIT", done.code)
        print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """)

    def peak_kb(name: str) -> int:
        result = run_tool("-c", wrapper, CONVERTER, str(tmp_path / f"{name}.bin"), str(tmp_path / f"{name}.safetensors"))
        assert "EXIT 0" in result.stdout, result.stderr
        return int(result.stdout.split("MAXRSS_KB")[1].split()[0])

    extra_mb = (peak_kb("big") - peak_kb("small")) / 1024
    source_mb = os.path.getsize(tmp_path / "big.bin") / 2**20
    assert source_mb > 180
    # one 32 MB tensor + its fp16 copy is 48 MB; collecting the fp16 tensors (safetensors.save_file) costs ~150 MB here
    assert extra_mb < 64, f"converting {source_mb:.0f} MB needed {extra_mb:.0f} MB more memory than the tiny file"
    out = read_safetensors(tmp_path / "big.safetensors")
    assert all(torch.equal(out[k], torch.full((2048, 4096), float(i), dtype=torch.float16)) for i, k in enumerate(replaced))


def test_streaming_writer_output_is_valid_safetensors_for_every_dtype(tmp_path):
    from tensor_stream import OutputTensor, safetensors_tensors, write_safetensors

    tensors = {
        "a": torch.randn(3, 5),
        "b": torch.randn(7).half(),
        "c": torch.randn(2, 2).bfloat16(),
        "d": torch.arange(6).reshape(2, 3),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 4),
    }
    with open(tmp_path / "x.safetensors", "wb") as handle:
        write_safetensors(handle, [OutputTensor(k, v.dtype, tuple(v.shape), lambda v=v: v) for k, v in tensors.items()], {"note": "test"})
    loaded = safetensors.torch.load_file(tmp_path / "x.safetensors")
    assert loaded.keys() == tensors.keys() and all(torch.equal(loaded[k], v) for k, v in tensors.items())
    lazy = {t.name: t.load() for t in safetensors_tensors(str(tmp_path / "x.safetensors"))}  # and our reader reads it back
    assert all(torch.equal(lazy[k], v) for k, v in tensors.items())


def test_download_helper_fails_cleanly_when_offline(tmp_path):
    unreachable = run_tool(DOWNLOADER, "--models-dir", str(tmp_path), "--include", "openpose", env={"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0"})
    assert unreachable.returncode == 1
    assert "you seem to be offline" in unreachable.stderr and "Traceback" not in unreachable.stderr
    offline_mode = run_tool(DOWNLOADER, "--models-dir", str(tmp_path), "--include", "parsing", env={"HF_HUB_OFFLINE": "1"})
    assert offline_mode.returncode == 1
    assert "HF_HUB_OFFLINE is set" in offline_mode.stderr and "Traceback" not in offline_mode.stderr
    assert list(tmp_path.iterdir()) == []  # no staging folder or partial file left behind


def test_download_helper_dry_run_lists_targets_in_the_packs_model_folders(pack, tmp_path):
    result = run_tool(
        DOWNLOADER, "--models-dir", str(tmp_path), "--dry-run", "--include", ",".join(download_models.GROUPS), env={"HF_ENDPOINT": "http://127.0.0.1:9"}
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []
    model_folders = comfy_host.pack_module("model_folders").MODEL_FOLDERS
    for item in download_models.FILES:
        assert str(tmp_path / item.target) in result.stdout
        folder, suffix = item.target.split("/")[0], os.path.splitext(item.target)[1]
        if folder == "garment_caption":  # a Hugging Face model folder, listed through its config.json
            assert f"{os.path.dirname(item.target)}/config.json" in {f.target for f in download_models.FILES}, item.target
        elif folder in model_folders:  # the pack's own folders must list the file once it is there
            assert suffix in model_folders[folder][1] or item.target.endswith("config.json"), item.target
        else:
            assert folder in ("clip_vision", "checkpoints")
    assert "non-commercial" in result.stdout
    bad = run_tool(DOWNLOADER, "--models-dir", str(tmp_path), "--include", "everything", "--dry-run")
    assert bad.returncode == 2 and "unknown group" in bad.stderr


def test_download_plan_matches_the_loaders_expectations():
    targets = {item.target for item in download_models.FILES}
    assert "idm_vton/IDM-VTON/unet/diffusion_pytorch_model.bin" in targets  # the TryonNet loader prefers paths with unet/
    assert "idm_vton/IDM-VTON/unet_encoder/diffusion_pytorch_model.safetensors" in targets
    assert all("non-commercial" in f.licence for f in download_models.FILES if f.repo_id.startswith("yisol/"))
