#!/usr/bin/env python3
"""Compile generated CUDA C sources with NVRTC and assemble the PTX with ptxas, without a GPU.

NVRTC comes from the `nvidia-cuda-nvrtc` wheel and ptxas from the `nvidia-cuda-nvcc` wheel (13.0,
matching the driver of the GPU machines). Each source is compiled to PTX for every architecture in
ARCHS and assembled to a cubin; any compile error, warning-as-error or missing kernel entry point
fails the check with the compiler's log.

usage: cuda_compile_check.py FILE.cu [FILE.cu ...]
"""
import ctypes
import pathlib
import subprocess
import sys
import tempfile

ARCHS = ["80", "90"]


def wheel_file(pattern: str) -> pathlib.Path:
    try:
        import nvidia  # namespace package installed by the nvidia-* wheels
    except ImportError:
        sys.exit("nvidia-cuda-nvrtc / nvidia-cuda-nvcc wheels are not installed (pip install them first)")
    for root in nvidia.__path__:
        hits = sorted(p for p in pathlib.Path(root).rglob(pattern) if ".alt." not in p.name)
        if hits:
            return hits[0]
    sys.exit(f"{pattern} not found in the nvidia wheels")


def check(nvrtc, ptxas: pathlib.Path, path: pathlib.Path, out_dir: pathlib.Path) -> None:
    src = path.read_bytes()
    # Single-kernel entry points, and the kernel-group workers' entry (`RK_GROUP_ENTRY`).
    entries = [line.split("RK_KERNEL ")[1].split("(")[0] for line in src.decode().splitlines()
               if line.startswith("RK_KERNEL rk_kernel_")]
    entries += ["rk_group_main" for line in src.decode().splitlines() if line.startswith("RK_GROUP_ENTRY")]
    if not entries:
        sys.exit(f"{path}: no RK_KERNEL entry point")
    for arch in ARCHS:
        prog = ctypes.c_void_p()
        rc = nvrtc.nvrtcCreateProgram(ctypes.byref(prog), src, str(path).encode(), 0, None, None)
        if rc != 0:
            sys.exit(f"nvrtcCreateProgram failed ({rc})")
        opts = [f"--gpu-architecture=compute_{arch}".encode(), b"--std=c++17", b"-default-device"]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        rc = nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(prog, log)
        if rc != 0:
            sys.exit(f"{path}: NVRTC failed for compute_{arch}:\n{log.value.decode(errors='replace')}")
        nvrtc.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetPTX(prog, ptx)
        nvrtc.nvrtcDestroyProgram(ctypes.byref(prog))
        text = ptx.value.decode()
        for e in entries:
            if f".entry {e}(" not in text:
                sys.exit(f"{path}: PTX for compute_{arch} has no entry {e}")
        ptx_file = out_dir / f"{path.stem}.sm_{arch}.ptx"
        ptx_file.write_text(text)
        cubin = out_dir / f"{path.stem}.sm_{arch}.cubin"
        res = subprocess.run([str(ptxas), f"-arch=sm_{arch}", "-Werror", str(ptx_file), "-o", str(cubin)],
                             capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"{path}: ptxas failed for sm_{arch}:\n{res.stdout}{res.stderr}")
        print(f"ok  {path.name}: NVRTC -> PTX -> ptxas sm_{arch} ({cubin.stat().st_size} bytes cubin), "
              f"entries {', '.join(entries)}")


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    # NVRTC dlopens its builtins library by soname; load it first so the lookup finds it.
    ctypes.CDLL(str(wheel_file("libnvrtc-builtins.so.*")), mode=ctypes.RTLD_GLOBAL)
    nvrtc = ctypes.CDLL(str(wheel_file("libnvrtc.so.*")))
    version = (ctypes.c_int(), ctypes.c_int())
    nvrtc.nvrtcVersion(ctypes.byref(version[0]), ctypes.byref(version[1]))
    ptxas = wheel_file("ptxas")
    print(f"NVRTC {version[0].value}.{version[1].value}, ptxas {ptxas}")
    with tempfile.TemporaryDirectory() as tmp:
        for f in sys.argv[1:]:
            check(nvrtc, ptxas, pathlib.Path(f), pathlib.Path(tmp))


if __name__ == "__main__":
    main()
