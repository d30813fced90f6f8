package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"golang.org/x/term"
)

// progressPrinter shows a long run's progress on stderr. On a terminal it
// redraws one line in place, a bar then the figures; anywhere else (a log,
// a pipe, CI) it writes one plain line per update, prefixed, so that logs
// stay greppable and carry no control characters.
type progressPrinter struct {
	w      io.Writer
	prefix string
	// width is the terminal's width in columns; 0 when w is no terminal.
	width int

	mu    sync.Mutex
	drawn bool // a redrawn line is on screen, not yet ended
}

// newProgressPrinter prints to w, which is a terminal only when it is an
// *os.File on one and $TERM is not "dumb".
func newProgressPrinter(w io.Writer, prefix string) *progressPrinter {
	p := &progressPrinter{w: w, prefix: prefix}
	if f, ok := w.(*os.File); ok && os.Getenv("TERM") != "dumb" && term.IsTerminal(int(f.Fd())) {
		if cols, _, err := term.GetSize(int(f.Fd())); err == nil && cols > 0 {
			p.width = cols
		}
	}
	return p
}

// Update shows done of total with line, the figures.
func (p *progressPrinter) Update(done, total int, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.width == 0 {
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, line)
		return
	}
	fmt.Fprint(p.w, "\r\033[K"+progressLine(done, total, line, p.width))
	p.drawn = true
}

// Println writes s on a line of its own, below a redrawn line.
func (p *progressPrinter) Println(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.end()
	fmt.Fprintf(p.w, "%s%s\n", p.prefix, s)
}

// Done ends a redrawn line, so what follows starts on a new one.
func (p *progressPrinter) Done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.end()
}

func (p *progressPrinter) end() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

// barWidth is the bar's width in cells between its brackets.
const barWidth = 30

// progressLine is the redrawn line: "[=====>    ] " and line, cut to
// width-1 columns so the terminal never wraps it (a wrapped line cannot
// be redrawn with a carriage return).
func progressLine(done, total int, line string, width int) string {
	s := progressBar(done, total) + " " + line
	if r := []rune(s); width > 1 && len(r) > width-1 {
		s = string(r[:width-1])
	}
	return s
}

// progressBar is "[" + barWidth cells + "]": done/total of them "=", the
// last of those ">" while unfinished. Nothing to do counts as finished.
func progressBar(done, total int) string {
	filled := barWidth
	if total > 0 {
		filled = min(barWidth, max(0, done*barWidth/total))
	}
	bar := strings.Repeat("=", filled)
	if filled > 0 && filled < barWidth {
		bar = bar[:filled-1] + ">"
	}
	return "[" + bar + strings.Repeat(" ", barWidth-filled) + "]"
}
