package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestProgressBar(t *testing.T) {
	for _, tc := range []struct {
		done, total int
		want        string
	}{
		{0, 10, "[" + strings.Repeat(" ", 30) + "]"},
		{1, 10, "[==>" + strings.Repeat(" ", 27) + "]"},
		{5, 10, "[" + strings.Repeat("=", 14) + ">" + strings.Repeat(" ", 15) + "]"},
		{10, 10, "[" + strings.Repeat("=", 30) + "]"},
		// More done than counted (objects added during the run) stays full.
		{12, 10, "[" + strings.Repeat("=", 30) + "]"},
		// Nothing to do is finished.
		{0, 0, "[" + strings.Repeat("=", 30) + "]"},
	} {
		if got := progressBar(tc.done, tc.total); got != tc.want {
			t.Errorf("progressBar(%d, %d) = %q, want %q", tc.done, tc.total, got, tc.want)
		}
	}
}

func TestProgressLineNeverWraps(t *testing.T) {
	line := "5000/10000 objects (50%), 0 failed, 412 objects/s, ETA 12s"
	if got := progressLine(5000, 10000, line, 200); !strings.HasSuffix(got, line) {
		t.Errorf("a wide terminal cut the line: %q", got)
	}
	got := progressLine(5000, 10000, line, 40)
	if n := len([]rune(got)); n != 39 {
		t.Errorf("on 40 columns the line is %d runes, want 39: %q", n, got)
	}
}

func TestProgressPrinterWritesPlainLinesOffATerminal(t *testing.T) {
	var b bytes.Buffer
	p := newProgressPrinter(&b, "migrate: ")
	p.Update(1, 2, "1/2 objects")
	p.Println("warning: something")
	p.Update(2, 2, "2/2 objects")
	p.Done()
	want := "migrate: 1/2 objects\nmigrate: warning: something\nmigrate: 2/2 objects\n"
	if b.String() != want {
		t.Errorf("off a terminal got %q, want %q", b.String(), want)
	}
}

func TestProgressPrinterRedrawsOnATerminal(t *testing.T) {
	var b bytes.Buffer
	p := &progressPrinter{w: &b, prefix: "migrate: ", width: 120}
	p.Update(1, 2, "1/2 objects")
	p.Update(2, 2, "2/2 objects")
	p.Println("warning: x")
	p.Done()
	out := b.String()
	if strings.Count(out, "\r\033[K") != 2 || !strings.Contains(out, "2/2 objects\nmigrate: warning: x\n") {
		t.Errorf("on a terminal got %q: want two redraws, then the warning on a line of its own", out)
	}
	if strings.HasSuffix(out, "\n\n") {
		t.Errorf("Done after Println added an empty line: %q", out)
	}
}
