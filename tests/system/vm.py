"""The system test's host side: QEMU as the device's hardware, the host as its bootloader
and as the operator's hand that plugs the stick.

Every wait is a wait for a console line (or for QEMU to exit) with a timeout; on a timeout
the last 60 console lines are printed and the scenario fails.
"""

import json
import os
import re
import socket
import subprocess
import threading
import time


class Fail(Exception):
    pass


def sh(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw).stdout


# --- the disk, read as a bootloader reads it -------------------------------------------

def debugfs(disk, request):
    out = subprocess.run(["debugfs", "-R", request, disk], capture_output=True, text=True)
    return out.stdout


def boot_entries(disk):
    """The BLS entries OSTree wrote, highest `version` first: [default, previous, ...]."""
    listing = debugfs(disk, "ls -p /boot/loader/entries")
    names = [f.split("/")[5] for f in listing.splitlines() if f.count("/") >= 6]
    entries = []
    for name in names:
        if not name.endswith(".conf"):
            continue
        text = debugfs(disk, f"cat /boot/loader/entries/{name}")
        entry = {"file": name}
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key:
                entry[key] = value.strip()
        entries.append(entry)
    if not entries:
        raise Fail(f"{disk}: no boot entries under /boot/loader/entries")
    entries.sort(key=lambda e: int(e.get("version", "0")), reverse=True)
    return entries


def extract_boot_files(disk, entry, into):
    """Copy the entry's kernel and initramfs out of the disk image."""
    os.makedirs(into, exist_ok=True)
    paths = {}
    for key in ("linux", "initrd"):
        src = entry[key]
        # /boot is not a separate filesystem here: OSTree's paths are relative to it.
        inside = src if src.startswith("/boot/") else "/boot" + src
        dst = os.path.join(into, key)
        if os.path.exists(dst):
            os.unlink(dst)
        debugfs(disk, f"dump {inside} {dst}")
        if not os.path.exists(dst) or os.path.getsize(dst) == 0:
            raise Fail(f"{disk}: could not read {inside} of {entry['file']}")
        paths[key] = dst
    return paths


# --- the stick -------------------------------------------------------------------------

def make_stick(path, bundle, size_mb):
    """A FAT stick holding `bundle` as /update-<n>/, written with mtools (no host mount)."""
    if os.path.exists(path):
        os.unlink(path)
    sh("mkfs.vfat", "-C", "-n", "USBUPDATE", path, str(size_mb * 1024))
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    sh("mcopy", "-s", "-i", path, bundle, "::/update", env=env)


def read_report(stick):
    """The report the agent left on the stick: (json, log text)."""
    env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
    names = sh("mdir", "-b", "-i", stick, "::/", env=env).split()
    json_name = [n for n in names if re.search(r"usb-update-report-.*\.json$", n)]
    if not json_name:
        raise Fail(f"{stick}: no report on the stick (files: {names})")
    text = sh("mtype", "-i", stick, json_name[0], env=env)
    log = sh("mtype", "-i", stick, json_name[0][:-5] + ".log", env=env)
    return json.loads(text), log


# --- the machine -----------------------------------------------------------------------

class Guest:
    started_ones = []

    def __init__(self, name, workdir, disk, entry, sticks=(), mem=1536):
        Guest.started_ones.append(self)
        self.name = name
        self.dir = workdir
        self.lines = []
        self.cond = threading.Condition()
        self.qmp_sock = os.path.join(workdir, f"{name}.qmp")
        if os.path.exists(self.qmp_sock):
            os.unlink(self.qmp_sock)
        boot = extract_boot_files(disk, entry, os.path.join(workdir, f"{name}-boot"))
        argv = [
            "qemu-system-x86_64", "-machine", "q35", "-accel", os.environ.get("SYSTEM_TEST_ACCEL", "tcg"), "-cpu", "max",
            "-m", str(mem), "-smp", "1", "-display", "none", "-no-reboot", "-nic", "none",
            "-serial", "stdio", "-monitor", "none",
            "-qmp", f"unix:{self.qmp_sock},server=on,wait=off",
            "-kernel", boot["linux"], "-initrd", boot["initrd"], "-append", entry["options"],
            "-drive", f"file={disk},if=virtio,format=raw,cache=unsafe",
            "-device", "qemu-xhci,id=xhci",
        ]
        # A stick left in across a reboot is there when the machine starts again.
        for i, stick in enumerate(sticks):
            argv += ["-drive", f"if=none,id=left{i},format=raw,file={stick}",
                     "-device", f"usb-storage,bus=xhci.0,drive=left{i},removable=on,id=leftdev{i}"]
        self.log = open(os.path.join(workdir, f"{name}.console"), "a", buffering=1)
        self.log.write(f"### boot {entry.get('title')} ({entry['file']})\n")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.qmp = None
        self.pos = 0
        self.sticks = 0

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            line = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)
            self.log.write(f"{time.monotonic() - self.started:7.1f} {line}\n")
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def tail(self, n=60):
        with self.cond:
            return "\n".join(self.lines[-n:])

    def fail(self, why):
        return Fail(f"{self.name}: {why}\n--- last 60 console lines ---\n{self.tail()}")

    def wait(self, pattern, timeout, what=None):
        """The first console line after the last match that matches `pattern`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                while self.pos < len(self.lines):
                    line = self.lines[self.pos]
                    self.pos += 1
                    m = rx.search(line)
                    if m:
                        print(f"  [{self.name} {time.monotonic() - self.started:6.1f}s] {line.strip()}",
                              flush=True)
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self.fail(f"timed out after {timeout} s waiting for {what or pattern!r}")
                if self.proc.poll() is not None and self.pos >= len(self.lines):
                    raise self.fail(f"QEMU exited ({self.proc.returncode}) while waiting for "
                                    f"{what or pattern!r}")
                self.cond.wait(min(left, 1.0))

    def wait_exit(self, timeout):
        """The guest rebooted or powered off (-no-reboot ends QEMU either way)."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise self.fail(f"did not reboot within {timeout} s")
        self.reader.join(5)
        print(f"  [{self.name} {time.monotonic() - self.started:6.1f}s] QEMU exited: the guest rebooted",
              flush=True)

    # QMP: one command at a time; events in between are skipped.
    def _qmp_connect(self):
        deadline = time.monotonic() + 30
        while True:
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.qmp_sock)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise self.fail("no QMP socket")
                time.sleep(0.2)
        self.qmp = s.makefile("rw")
        json.loads(self.qmp.readline())
        self.command("qmp_capabilities")

    def command_reply(self, execute, **args):
        if self.qmp is None:
            self._qmp_connect()
        self.qmp.write(json.dumps({"execute": execute, "arguments": args}) + "\n")
        self.qmp.flush()
        while True:
            reply = json.loads(self.qmp.readline())
            if "return" in reply or "error" in reply:
                return reply

    def command(self, execute, **args):
        reply = self.command_reply(execute, **args)
        if "error" in reply:
            raise self.fail(f"QMP {execute}: {reply['error']}")
        return reply["return"]

    def left_in(self, i=0):
        """What plug() returns, for a stick the machine started with."""
        return (None, f"leftdev{i}")

    def plug(self, stick):
        """The operator plugs a USB stick: a usb-storage device on the xHCI bus."""
        self.sticks += 1
        node, dev = f"stick{self.sticks}", f"stickdev{self.sticks}"
        self.command("blockdev-add", **{"node-name": node, "driver": "raw",
                                        "file": {"driver": "file", "filename": stick}})
        self.command("device_add", driver="usb-storage", bus="xhci.0", drive=node,
                     removable=True, id=dev)
        return node, dev

    def unplug(self, plugged):
        """The operator pulls the stick. device_del is asynchronous: the drive is free (or,
        for a stick the machine started with, gone) only once the guest let go of it."""
        node, dev = plugged
        self.command("device_del", id=dev)
        deadline = time.monotonic() + 30
        while True:
            if node:
                reply = self.command_reply("blockdev-del", **{"node-name": node})
                if "return" in reply:
                    return
                if "in use" not in reply["error"]["desc"]:
                    raise self.fail(f"QMP blockdev-del {node}: {reply['error']}")
            elif dev.replace("dev", "") not in [b["device"] for b in self.command("query-block")]:
                return
            if time.monotonic() > deadline:
                raise self.fail(f"{dev} still there 30 s after device_del")
            time.sleep(0.2)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def quit(self):
        if self.proc.poll() is None:
            try:
                self.command("quit")
            except (Fail, OSError, ValueError):
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(5)
