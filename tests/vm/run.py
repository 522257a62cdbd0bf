#!/usr/bin/env python3
"""`make vm-test KERNEL=6.1|6.12`: run the kernel test suite on a stock Debian kernel in a VM.

Nothing but Debian packages is downloaded: the kernel image and its headers are fetched with a
private apt state (the host's apt configuration is not changed), unpacked with `dpkg-deb -x` into a
scratch folder (never installed over the host), and booted with qemu. The guest's root filesystem is
the host's, shared read-only over virtio-9p with a tmpfs laid over it, so the guest runs this very
checkout and its venv. qemu uses KVM when it can and emulates (TCG) otherwise.

Exit status: the test command's, or 2 when the VM did not report one (boot failure, timeout).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCRATCH = Path(os.environ.get("KERNSPLIT_VM_DIR", "/var/tmp/kernsplit-vm"))
MIRROR = "http://deb.debian.org/debian"
SOURCES = f"""\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {MIRROR} bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {MIRROR} bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {MIRROR} bookworm-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {MIRROR}-security bookworm-security main
"""
# Modules the initramfs needs to reach the host's root filesystem (their dependencies follow).
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")
EXIT_RE = re.compile(r"KS-VM-EXIT=(\d+)")


def apt(*args: str, **kw) -> subprocess.CompletedProcess:
    state = SCRATCH / "apt"
    opts = [f"-oDir::State={state}/state", f"-oDir::Cache={state}/cache",
            f"-oDir::Etc::SourceList={state}/sources.list", "-oDir::Etc::SourceParts=/nonexistent",
            "-oDir::State::status=/var/lib/dpkg/status", "-oAPT::Sandbox::User=root"]
    return subprocess.run([args[0], *opts, *args[1:]], check=True, text=True, **kw)


def apt_setup() -> None:
    state = SCRATCH / "apt"
    for sub in ("state/lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(SOURCES)
    apt("apt-get", "update", "-qq")


def kernel_package(series: str) -> str:
    """The newest linux-image-<release> of a series (6.1: bookworm; 6.12: bookworm-backports),
    found through the metapackage's dependencies."""
    shown = apt("apt-cache", "show", "linux-image-amd64", capture_output=True).stdout
    for version, depends in re.findall(r"^Version: (\S+)\n(?:.*\n)*?Depends: (linux-image-\S+)", shown, re.M):
        if version.startswith(series + "."):
            return depends
    have = ", ".join(re.findall(r"^Version: (\S+)", shown, re.M))
    raise SystemExit(f"vm-test: no Debian kernel of series {series} found (have: {have})")


def fetch_kernel(series: str) -> tuple[Path, str]:
    """Download and unpack the image, headers and kbuild packages; returns (tree, release)."""
    image = kernel_package(series)
    release = image.removeprefix("linux-image-")
    tree = SCRATCH / "kernels" / release
    if (tree / ".complete").exists():
        return tree, release
    debs = SCRATCH / "debs" / release
    debs.mkdir(parents=True, exist_ok=True)
    headers = f"linux-headers-{release}"
    depends = apt("apt-cache", "show", headers, capture_output=True).stdout
    extra = re.findall(r"(linux-headers-[^\s,]+-common|linux-kbuild-[^\s,]+)", depends.split("\nDescription")[0])
    apt("apt-get", "download", "-qq", image, headers, *dict.fromkeys(extra), cwd=debs)
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", deb, tree], check=True)
    subprocess.run(["depmod", "-b", tree, release], check=True)
    (tree / ".complete").touch()
    return tree, release


def module_order(tree: Path, release: str) -> list[str]:
    """BOOT_MODULES and their dependencies, dependencies first (from modules.dep)."""
    moddir = tree / "lib" / "modules" / release
    deps: dict[str, list[str]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.split(".ko")[0].replace("-", "_"): m for m in deps}
    order: list[str] = []

    def visit(mod: str) -> None:
        for dep in deps[mod]:
            visit(dep)
        if mod not in order:
            order.append(mod)
    for name in BOOT_MODULES:
        if name in by_name:            # absent: built into this kernel
            visit(by_name[name])
    return order


def build_initramfs(tree: Path, release: str) -> Path:
    out = tree.parent / f"initramfs-{release}.cpio.gz"
    root = tree.parent / f"initramfs-{release}"
    shutil.rmtree(root, ignore_errors=True)
    for sub in ("bin", "proc", "sys", "dev", "modules"):
        (root / sub).mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    shutil.copy2(HERE / "guest-init.sh", root / "init")
    names = []
    for mod in module_order(tree, release):
        src = tree / "lib" / "modules" / release / mod
        shutil.copy2(src, root / "modules" / src.name)
        names.append(src.name)
    (root / "modules.order").write_text("\n".join(names) + "\n")
    files = subprocess.run(["find", "."], cwd=root, check=True, capture_output=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files,
                          check=True, capture_output=True).stdout
    out.write_bytes(subprocess.run(["gzip", "-1"], input=cpio, check=True, capture_output=True).stdout)
    return out


def kvm_usable() -> bool:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    flags = Path("/proc/cpuinfo").read_text()
    return " vmx" in flags or " svm" in flags


def boot(tree: Path, release: str, initramfs: Path, run_dir: Path, args: argparse.Namespace) -> int:
    accel = ["-accel", "kvm", "-cpu", "host"] if kvm_usable() else ["-accel", "tcg", "-cpu", "max"]
    log = run_dir / "console.log"
    cmd = ["qemu-system-x86_64", "-machine", "q35", *accel, "-m", args.memory, "-smp", str(args.cpus),
           "-nographic", "-no-reboot", "-kernel", str(tree / "boot" / f"vmlinuz-{release}"),
           "-initrd", str(initramfs),
           "-append", f"console=ttyS0 panic=-1 quiet loglevel=3 rdinit=/init ks.run={run_dir}/guest-run.sh",
           "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
           "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot", "-nic", "none"]
    print(f"vm-test: booting {release} ({accel[1]}), console log {log}", flush=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        deadline = time.monotonic() + args.timeout
        status = None
        try:
            for line in proc.stdout:
                out.write(line)
                sys.stdout.write(line)
                if (m := EXIT_RE.search(line)):
                    status = int(m.group(1))
                if time.monotonic() > deadline:
                    print(f"vm-test: timeout after {args.timeout} s", flush=True)
                    break
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)     # our VM, stopped by its PID
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    return 2 if status is None else status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="6.1", help="Debian kernel series: 6.1 (bookworm) or 6.12 (backports)")
    parser.add_argument("--headers", type=int, choices=(0, 1), default=0,
                        help="1: lay the linux-headers package in place; 0: BCC uses the generated tree "
                             "from /boot/config-<release> (a node without linux-headers)")
    parser.add_argument("--tests", default="tests/kernel tests/unit", help="pytest arguments")
    parser.add_argument("--memory", default="4G")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--time-scale", default="4", help="KERNSPLIT_TEST_TIME_SCALE inside the VM")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds before the VM is stopped")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("vm-test: run as root (9p export of / and apt downloads)")
    apt_setup()
    tree, release = fetch_kernel(args.kernel)
    initramfs = build_initramfs(tree, release)
    run_dir = SCRATCH / "runs" / f"{release}-{os.getpid()}"
    run_dir.mkdir(parents=True)
    shutil.copy2(HERE / "guest-run.sh", run_dir / "guest-run.sh")
    python = REPO / ".venv" / "bin" / "python"
    (run_dir / "settings.sh").write_text(
        f"KS_RELEASE='{release}'\nKS_TREE='{tree}'\nKS_REPO='{REPO}'\nKS_HEADERS='{args.headers}'\n"
        f"KS_TIME_SCALE='{args.time_scale}'\n"
        f"KS_COMMAND='{python} -m pytest -q -ra -p no:cacheprovider {args.tests}'\n")
    status = boot(tree, release, initramfs, run_dir, args)
    print(f"vm-test: kernel {release}: exit status {status}")
    return status


if __name__ == "__main__":
    sys.exit(main())
