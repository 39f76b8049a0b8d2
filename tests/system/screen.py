"""What an operator's terminal shows of a console's bytes, to catch lines that were written
and then erased.

At boot, systemd's status display draws "A start job is running for ..." and redraws it in
place: it moves the cursor one line up (ESC M), erases that line (ESC [K) and writes again.
A line another program wrote below it in between is the one that gets erased. The bytes of
that line are still in a serial log; on the screen it is gone. This module replays the
bytes on an unbounded screen (no wrap, no scrolling off) and reports every line holding
`marker` that an erase or an overwrite hit.
"""

import re

CSI = re.compile(rb"\x1b\[([0-9;?]*)([@-~])")


class Screen:
    def __init__(self, marker):
        self.marker = marker
        self.rows = [[]]
        self.row = 0
        self.col = 0
        self.erased = []

    def _line(self):
        while len(self.rows) <= self.row:
            self.rows.append([])
        return self.rows[self.row]

    def _hit(self, line, start, end):
        """Columns [start, end) of `line` are about to change."""
        text = "".join(line)
        at = text.find(self.marker)
        if at >= 0 and start < len(text) and end > at:
            self.erased.append(text.rstrip())

    def _erase(self, start, end):
        line = self._line()
        end = min(end, len(line))
        if start < end:
            self._hit(line, start, end)
            line[start:end] = [" "] * (end - start)

    def _put(self, ch):
        line = self._line()
        if self.col < len(line):
            if line[self.col] not in (" ", ch):
                self._hit(line, self.col, self.col + 1)
            line[self.col] = ch
        else:
            line.extend([" "] * (self.col - len(line)))
            line.append(ch)
        self.col += 1

    def feed(self, data):
        text = data
        i = 0
        while i < len(text):
            b = text[i]
            if b == 0x1B:
                m = CSI.match(text, i)
                if m:
                    self._csi(m.group(1).decode(), chr(m.group(2)[0]))
                    i = m.end()
                    continue
                nxt = text[i + 1:i + 2]
                if nxt == b"M":     # reverse index: one line up
                    self.row = max(0, self.row - 1)
                elif nxt == b"D":   # index: one line down
                    self.row += 1
                elif nxt == b"E":   # next line
                    self.row, self.col = self.row + 1, 0
                i += 2
                continue
            if b == 0x0A:
                self.row += 1
            elif b == 0x0D:
                self.col = 0
            elif b == 0x08:
                self.col = max(0, self.col - 1)
            elif b == 0x09:
                self.col = (self.col // 8 + 1) * 8
            elif b >= 0x20:
                # UTF-8 continuation bytes take no column of their own.
                if b & 0xC0 != 0x80:
                    self._put(chr(b) if b < 0x80 else "?")
            i += 1

    def _csi(self, params, final):
        nums = [int(p) if p.isdigit() else 0 for p in params.lstrip("?").split(";")]
        n = max(1, nums[0])
        if final == "K":
            which = nums[0]
            if which == 0:
                self._erase(self.col, 1 << 30)
            elif which == 1:
                self._erase(0, self.col + 1)
            else:
                self._erase(0, 1 << 30)
        elif final == "J" and nums[0] in (2, 3):
            for r in range(len(self.rows)):
                self.row = r
                self._erase(0, 1 << 30)
        elif final == "A":
            self.row = max(0, self.row - n)
        elif final == "B":
            self.row += n
        elif final == "C":
            self.col += n
        elif final == "D":
            self.col = max(0, self.col - n)
        elif final == "G":
            self.col = n - 1
        # Colours (m) and everything else leave the text alone.

    def text(self):
        return ["".join(r).rstrip() for r in self.rows]


def erased_lines(data, marker):
    """The lines holding `marker` that the bytes `data` erased or overwrote afterwards."""
    s = Screen(marker)
    s.feed(data)
    return s.erased


def selftest():
    """The check must see what systemd's redraw does, and must not cry wolf without it."""
    ours = b"usb-update: finishing the update\r\n"
    cylon = b"[  *** ] A start job is running for usb-update (5s / 1h)\r\n"
    redraw = b"\x1bM\r\x1b[K[ ***  ] A start job is running for usb-update (6s / 1h)\r\n"
    hit = erased_lines(cylon + ours + redraw, "usb-update: ")
    assert hit == ["usb-update: finishing the update"], hit
    # The redraw of its own line, then a finished job and our line below: nothing erased.
    ok = cylon + redraw + b"\x1bM\r\x1b[K[  OK  ] Finished docker.service\r\n" + ours
    assert erased_lines(ok, "usb-update: ") == [], erased_lines(ok, "usb-update: ")
    s = Screen("usb-update: ")
    s.feed(ok)
    assert s.text()[-2:] == ["[  OK  ] Finished docker.service",
                             "usb-update: finishing the update"], s.text()


if __name__ == "__main__":
    selftest()
    print("screen.py: selftest ok")
