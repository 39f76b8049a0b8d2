"""The system test's scenarios: python3 tests/system/scenarios.py WORK [--jobs N] [NAME...]

WORK holds what tests/system/build-image made (disk.raw, bundle, bundle-big). Each scenario
starts from its own copy of disk.raw (the same device every time) and ends with checks of
the agent's lines, the disk's boot entries, the report on the stick and what the boot
console shows. A failed scenario prints why, the last 40 boot console lines and the
agent's journal.

SYSTEM_TEST_BREAK=NAME (development only, never set by CI): scenario NAME gets a stick
whose targets.json was changed after signing, to see a failure report.
"""

import json
import os
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from screen import selftest  # noqa: E402
from vm import Fail, Guest, boot_entries, make_stick, read_report, say, sh, site_report  # noqa: E402

BOOT = 480      # a cold boot to the probe's last line under TCG: 90 s idle, 175 s on a busy host
INSTALL = 600   # stick plugged -> the agent's reboot
FINALIZE = 600  # boot -> finalize done (dockerd, docker-compose v1 and the settle time)

AGENT = r"^usb-update: "


def check(cond, why):
    if not cond:
        raise Fail(why)


def fresh_disk(work, name):
    disk = os.path.join(work, f"{name}.raw")
    subprocess.run(["cp", "--sparse=always", os.path.join(work, "disk.raw"), disk], check=True)
    return disk


def boot(work, name, disk, which, sticks=()):
    """Play the bootloader: boot the default entry (which=0) or the previous one (1)."""
    entries = boot_entries(disk)
    check(len(entries) > which, f"{disk}: no entry #{which} in {[e['file'] for e in entries]}")
    entry = entries[which]
    say(f"  [{name} bootloader] {'default' if which == 0 else 'previous'} entry {entry['file']}: "
        f"{entry.get('title')} ({entry['options'].split('ostree=')[-1].split()[0]})")
    return Guest(name, work, disk, entry, sticks)


def booted(g, version):
    line = g.wait_journal(r"system-test: running version", BOOT, "the probe after boot")
    check(line.strip().endswith(f"version {version}"), f"expected version {version}: {line!r}")
    g.wait_journal(r"system-test: probe done", 60)


def documented(g):
    """The package's documentation inside the guest, as the probe found it at this boot:
    `man usb-update` reads, and each Documentation= target of the units exists."""
    lines = g.journal.lines
    man = [line for line in lines if "system-test: man usb-update: " in line]
    check(man and "usb-update - " in man[-1], f"man usb-update in the guest: {man}")
    docs = [line for line in lines if "system-test: documentation " in line]
    check(len(docs) >= 2 and all("documentation present: " in line for line in docs),
          f"the units' Documentation= in the guest: {docs}")
    check(any("man:usb-update(1)" in line for line in docs), f"no man: target: {docs}")
    say(f"  [{g.name}] {man[-1].split('system-test: ')[-1].strip()}; "
        f"{len(docs)} Documentation= targets present")


def stick_for(work, name, bundle, size_mb):
    stick = os.path.join(work, f"{name}-stick.img")
    make_stick(stick, os.path.join(work, bundle), size_mb)
    if os.environ.get("SYSTEM_TEST_BREAK") == name:
        # Broken on purpose: one field of the signed targets.json changed.
        env = dict(os.environ, MTOOLS_SKIP_CHECK="1")
        meta = json.loads(sh("mtype", "-i", stick, "::/update/tuf/targets.json", env=env))
        meta["signed"]["version"] += 1
        tampered = os.path.join(work, f"{name}-targets.json")
        with open(tampered, "w") as f:
            json.dump(meta, f)
        sh("mcopy", "-o", "-i", stick, tampered, "::/update/tuf/targets.json", env=env)
        say(f"  [{name}] SYSTEM_TEST_BREAK: the stick's targets.json no longer matches its "
            f"signatures")
    return stick


def left_in_seen(g):
    """At boot the agent also sees the stick left in (a second agent beside finalize: its
    lines come before, among or after finalize's): nothing more to do with it."""
    g.wait(AGENT + r"this stick was left in across the reboot it asked for: nothing more",
           FINALIZE, "the sighting of the stick left in", anywhere=True)
    g.wait(AGENT + r"the stick can be removed", 60, anywhere=True)


def install_and_reboot(g, stick):
    """Plug the stick; the agent installs and reboots by itself."""
    plugged = g.plug(stick)
    g.wait(AGENT + r"stick .* inserted: do not remove it", 120, "the agent seeing the stick")
    g.wait(AGENT + r"verifying and installing the update", 120)
    g.wait(AGENT + r"installed: ", INSTALL, "the install's result")
    g.wait(AGENT + r"the stick can be removed", 60)
    g.wait(AGENT + r"rebooting to finish the update", 60)
    g.wait_exit(120)
    return plugged


def reported(work, stick, name, code, after):
    """What an operator reads back at the office: `usb-update report` shows this device's
    one report on the stick, checked intact, with the result the device had."""
    rows, table = site_report(work, stick, name)
    say(f"  [{name} stick] usb-update report:\n" + table.rstrip())
    check(len(rows) == 1, f"one report on the {name} stick: {rows}")
    row = rows[0]
    check(row["verdict"] == "intact", f"the {name} report should be intact: {row}")
    check(row["report"]["exit_code"] == code, f"{name} report: {row}")
    if after:
        check((row["report"]["after"] or "").startswith(after), f"{name} report: {row}")
    check(row["report"]["hardware_id"] == "intel-corei7-64", f"{name} report: {row}")
    check(str(code) in table, f"the {name} table should show {code}: {table}")


def happy(work):
    """Plug a stick, walk away: install, reboot, finalize, the app runs, the report says so."""
    disk = fresh_disk(work, "happy")
    stick = stick_for(work, "happy", "bundle", 512)
    g = boot(work, "happy-1", disk, 0)
    booted(g, 1)
    documented(g)
    install_and_reboot(g, stick)
    entries = boot_entries(disk)
    check(len(entries) == 2, f"two deployments after the install: {entries}")
    # The stick stays in: the operator walked away.
    g = boot(work, "happy-2", disk, 0, sticks=[stick])
    g.wait(AGENT + r"finishing the update started before the reboot", FINALIZE)
    g.wait(AGENT + r"updated to ", FINALIZE, "finalize's success")
    left_in_seen(g)
    booted(g, 2)
    apps = [line for line in g.journal.lines if "system-test: app " in line]
    check(any("app-01" in l and " Up " in l for l in apps), f"app-01 is not running: {apps}")
    g.quit()
    report, log = read_report(stick)
    say(f"  [happy stick] report: exit {report['exit_code']}, {report['before']} -> "
        f"{report['after']}: {report['result']}")
    check(report["exit_code"] == 100, f"report: {report}")
    check((report["after"] or "").startswith("intel-corei7-64-lmp-2"), f"report: {report}")
    check("installed: " in log, f"report log: {log}")
    reported(work, stick, "happy", 100, "intel-corei7-64-lmp-2")


def rollback(work):
    """The bootloader falls back to the previous entry after the agent's reboot: finalize
    rolls back, and the same stick plugged again is refused, not installed again."""
    disk = fresh_disk(work, "rollback")
    stick = stick_for(work, "rollback", "bundle", 512)
    g = boot(work, "rollback-1", disk, 0)
    booted(g, 1)
    install_and_reboot(g, stick)
    # As a bootloader does after the new entry's boot attempts ran out.
    g = boot(work, "rollback-2", disk, 1, sticks=[stick])
    g.wait(AGENT + r"finishing the update started before the reboot", FINALIZE)
    g.wait(AGENT + r"the device booted \w+ instead of intel-corei7-64-lmp-2: bootloader rollback",
           FINALIZE, "finalize's rollback")
    left_in_seen(g)
    booted(g, 1)
    # The operator takes the stick out and puts it in again.
    g.unplug(g.left_in())
    plugged = g.plug(stick)
    g.wait(AGENT + r"stick .* inserted: do not remove it", 120, "the agent seeing the stick again")
    line = g.wait(AGENT + r"error: ", INSTALL, "the refusal", failing=True)
    check("failed" in line, f"the refusal should say the target failed before: {line!r}")
    g.wait(AGENT + r"the stick can be removed", 60, failing=True)
    g.unplug(plugged)
    g.quit()
    report, log = read_report(stick)
    say(f"  [rollback stick] report: exit {report['exit_code']}: {report['result']}; "
        f"{report['error']}")
    check(report["exit_code"] == 103, f"report: {report}")
    reported(work, stick, "rollback", 103, None)
    entries = boot_entries(disk)
    check(len(entries) == 1, f"one deployment after the rollback: {[e['file'] for e in entries]}")


def pull(work):
    """The stick pulled in the middle of the copy: the error shows, nothing changes, and a
    second plug of a good stick installs."""
    disk = fresh_disk(work, "pull")
    stick = stick_for(work, "pull", "bundle-big", 768)
    g = boot(work, "pull-1", disk, 0)
    booted(g, 1)
    plugged = g.plug(stick)
    g.wait(AGENT + r"stick .* inserted: do not remove it", 120, "the agent seeing the stick")
    g.wait(AGENT + r".*: ([1-9]|[1-8][0-9])%$", INSTALL, "the copy under way")
    g.unplug(plugged)
    line = g.wait(AGENT + r"error: ", 300, "the error after the pull", failing=True)
    g.wait(AGENT + r"the stick can be removed", 60, failing=True)
    # The rootfs pull and the apps' copy read the stick at once: either may meet the pulled
    # stick first, as a failed read (EIO) or as a file a FAT lookup no longer finds.
    check(line.rstrip().endswith("was the stick removed?"),
          f"the error should name the failed medium: {line!r}")
    # The same stick again: it is a good stick, the pull did not harm it.
    install_and_reboot(g, stick)
    entries = boot_entries(disk)
    check(len(entries) == 2, f"two deployments after the install: {[e['file'] for e in entries]}")
    g = boot(work, "pull-2", disk, 0)
    g.wait(AGENT + r"updated to ", FINALIZE, "finalize's success")
    booted(g, 2)
    g.quit()
    report, _ = read_report(stick)
    check(report["exit_code"] == 100, f"report: {report}")


SCENARIOS = {"happy": happy, "rollback": rollback, "pull": pull}


def run_one(work, name, results):
    t = time.monotonic()
    try:
        SCENARIOS[name](work)
        results[name] = ("ok", time.monotonic() - t)
    except Exception as e:  # noqa: BLE001 -- a scenario's failure must not hide the others'
        results[name] = ("FAILED", time.monotonic() - t)
        why = str(e) if isinstance(e, Fail) else traceback.format_exc().rstrip()
        mine = [g for g in Guest.started_ones if g.name.startswith(name + "-")]
        text = [f"FAILED {name} after {time.monotonic() - t:.0f} s: {why}"]
        if mine:
            text.append(mine[-1].report())
            text.append(f"--- earlier boots of {name}: "
                        f"{', '.join(g.name for g in mine[:-1]) or 'none'} "
                        f"(their logs: {work}/{name}-*.console, .agent, .journal) ---")
        say("\n".join(text))
    finally:
        for g in Guest.started_ones:
            if g.name.startswith(name + "-"):
                g.kill()


def main():
    """Scenarios run side by side (--jobs, default 3): each is one single-threaded TCG
    machine, and the 20-minute budget does not allow them one after the other."""
    args = sys.argv[1:]
    jobs = 3
    if args[:1] == ["--jobs"]:
        jobs, args = int(args[1]), args[2:]
    work, names = args[0], args[1:] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        sys.exit(f"unknown scenario(s) {unknown}: {' '.join(SCENARIOS)}")
    selftest()
    for name in names:
        say(f"== scenario {name}: {' '.join(SCENARIOS[name].__doc__.split())}")
    t0 = time.monotonic()
    results = {}
    pending = list(names)
    running = []
    while pending or running:
        running = [t for t in running if t.is_alive()]
        while pending and len(running) < jobs:
            t = threading.Thread(target=run_one, args=(work, pending.pop(0), results))
            t.start()
            running.append(t)
        time.sleep(0.5)
    for name in names:
        result, secs = results[name]
        say(f"== {name}: {result} in {secs:.0f} s")
    say(f"== scenarios took {time.monotonic() - t0:.0f} s (--jobs {jobs})")
    sys.exit(0 if all(results[n][0] == "ok" for n in names) else 1)


if __name__ == "__main__":
    main()
