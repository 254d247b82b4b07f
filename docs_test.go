package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"unicode"

	"github.com/google/go-cmp/cmp"
	"github.com/urfave/cli/v2"
)

// TestReadme keeps README.md true: its usage block is `echohub serve --help`
// verbatim, and its flags table has exactly one row per flag, whose env,
// default and meaning are the code's. The meaning is the flag's usage string
// as written in config.go (placeholder in backticks), so the table says what
// --help says; a flag without a default shows one in parentheses, such as
// "(off)".
func TestReadme(t *testing.T) {
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	_, help, _ := runCLI(context.Background(), "", "serve", "--help")
	if !strings.Contains(readme, "```text\n"+help+"```\n") {
		t.Errorf("README.md does not hold `echohub serve --help` verbatim; it is now:\n%s", help)
	}

	rows := make(map[string][]string) // flag name → its cells: env, default, meaning
	for line := range strings.Lines(readme) {
		if !strings.HasPrefix(line, "| --") {
			continue
		}
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), " | ")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		name := strings.TrimPrefix(cells[0], "--")
		if _, dup := rows[name]; dup || len(cells) != 4 {
			t.Errorf("README.md flags table: row %q is a duplicate or does not have 4 cells", strings.TrimSpace(line))
			continue
		}
		rows[name] = cells[1:]
	}
	for _, f := range serveFlags() {
		name := f.Names()[0]
		row, ok := rows[name]
		if !ok {
			t.Errorf("README.md flags table has no row for --%s", name)
			continue
		}
		delete(rows, name)
		df := f.(cli.DocGenerationFlag)
		want := []string{"ECHOHUB_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")), flagDefault(df), df.GetUsage()}
		if want[1] == "" && strings.HasPrefix(row[1], "(") && strings.HasSuffix(row[1], ")") {
			want[1] = row[1]
		}
		if !slices.Equal(row, want) {
			t.Errorf("README.md flags table row for --%s:\n got | %s |\nwant | %s | (a default in parentheses when the code has none)",
				name, strings.Join(row, " | "), strings.Join(want, " | "))
		}
	}
	for name := range rows {
		t.Errorf("README.md flags table has a row for --%s, which serve does not have", name)
	}
}

// flagDefault is a flag's default as --help shows it, without quotes; "" when
// it has none.
func flagDefault(f cli.DocGenerationFlag) string {
	s := f.GetDefaultText()
	if u, err := strconv.Unquote(s); err == nil {
		return u
	}
	return s
}

// TestDocsLinks fails on a broken relative link in README.md or docs/*.md (a
// missing file or #anchor, or a path out of the repository), and on a file in
// docs/ that README.md does not lead to.
func TestDocsLinks(t *testing.T) {
	for _, problem := range checkDocs(os.DirFS(".")) {
		t.Error(problem)
	}
}

// TestCheckDocs shows that checkDocs finds each kind of broken link, and
// ignores what only looks like a link.
func TestCheckDocs(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	tests := []struct {
		name  string
		files fstest.MapFS
		want  []string
	}{{
		name: "good",
		files: fstest.MapFS{
			"README.md":    file("# echohub\n\n## Quick start\n[a](docs/a.md#the-a-part) [b](#quick-start) [web](https://example.com/x.md)\n"),
			"docs/a.md":    file("# A\n\n## The `a` part\n\n[back](../README.md#echohub) [b](b.md) [self](#a)\n"),
			"docs/b.md":    file("# B\n\n## Same\n\n## Same\n\n[second](#same-1) [code](../main.go)\n"),
			"main.go":      file("package main\n"),
			"docs/img.png": file("png"),
		},
	}, {
		name: "missing file",
		files: fstest.MapFS{
			"README.md": file("[a](docs/gone.md)\n"),
		},
		want: []string{`README.md: link "docs/gone.md": no such file`},
	}, {
		name: "missing anchor",
		files: fstest.MapFS{
			"README.md": file("# R\n[a](docs/a.md#nowhere) [r](#r) [s](#nope)\n"),
			"docs/a.md": file("# A\n"),
		},
		want: []string{
			`README.md: link "docs/a.md#nowhere": docs/a.md has no heading #nowhere`,
			`README.md: link "#nope": README.md has no heading #nope`,
		},
	}, {
		name: "out of the repository",
		files: fstest.MapFS{
			"README.md": file("[up](../elsewhere/notes.md) [abs](/etc/passwd)\n"),
		},
		want: []string{
			`README.md: link "../elsewhere/notes.md": leaves the repository`,
			`README.md: link "/etc/passwd": leaves the repository`,
		},
	}, {
		name: "unreachable doc",
		files: fstest.MapFS{
			"README.md":      file("[a](docs/a.md)\n"),
			"docs/a.md":      file("# A\n"),
			"docs/orphan.md": file("# Orphan\n[a](a.md)\n"),
		},
		want: []string{"docs/orphan.md: no link leads to it from README.md"},
	}, {
		name: "not links",
		files: fstest.MapFS{
			"README.md": file("```\n[a](gone.md)\n```\n`[b](gone.md)` <!-- [c](gone.md) -->\n"),
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, checkDocs(tt.files)); diff != "" {
				t.Errorf("checkDocs() problems (-want +got):\n%s", diff)
			}
		})
	}
}

var (
	// mdLink matches an inline link or image, [text](target "title"), and
	// captures its target.
	mdLink = regexp.MustCompile(`\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)`)
	// mdRef matches a reference definition, [name]: target.
	mdRef = regexp.MustCompile(`(?m)^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)`)
	// codeSpan and htmlComment are text that looks like links but is not.
	codeSpan    = regexp.MustCompile("`+[^`]*`+")
	htmlComment = regexp.MustCompile(`(?s)<!--.*?-->`)
	// urlScheme marks a link that leaves the repository on purpose.
	urlScheme = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// checkDocs checks every relative link in README.md and docs/*.md of fsys
// and returns one line per problem, in file order.
func checkDocs(fsys fs.FS) []string {
	docs, _ := fs.Glob(fsys, "docs/*.md")
	files := append([]string{"README.md"}, docs...)
	var problems []string
	linked := make(map[string][]string) // file → the .md files it links to
	for _, name := range files {
		text, err := fs.ReadFile(fsys, name)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		prose, _ := splitMarkdown(string(text))
		var targets []string
		for _, m := range mdLink.FindAllStringSubmatch(prose, -1) {
			targets = append(targets, m[1])
		}
		for _, m := range mdRef.FindAllStringSubmatch(prose, -1) {
			targets = append(targets, m[1])
		}
		for _, target := range targets {
			if urlScheme.MatchString(target) {
				continue
			}
			file, anchor, _ := strings.Cut(target, "#")
			switch {
			case file == "":
				file = name
			case strings.HasPrefix(file, "/"):
				problems = append(problems, fmt.Sprintf("%s: link %q: leaves the repository", name, target))
				continue
			default:
				file = path.Join(path.Dir(name), file)
			}
			if file == ".." || strings.HasPrefix(file, "../") {
				problems = append(problems, fmt.Sprintf("%s: link %q: leaves the repository", name, target))
				continue
			}
			if _, err := fs.Stat(fsys, file); err != nil {
				problems = append(problems, fmt.Sprintf("%s: link %q: no such file", name, target))
				continue
			}
			if !strings.HasSuffix(file, ".md") {
				continue
			}
			linked[name] = append(linked[name], file)
			if anchor == "" {
				continue
			}
			if text, err := fs.ReadFile(fsys, file); err == nil {
				_, anchors := splitMarkdown(string(text))
				if !anchors[anchor] {
					problems = append(problems, fmt.Sprintf("%s: link %q: %s has no heading #%s", name, target, file, anchor))
				}
			}
		}
	}
	reached := map[string]bool{"README.md": true}
	for next := []string{"README.md"}; len(next) > 0; {
		name := next[0]
		next = next[1:]
		for _, file := range linked[name] {
			if !reached[file] {
				reached[file] = true
				next = append(next, file)
			}
		}
	}
	for _, name := range docs {
		if !reached[name] {
			problems = append(problems, name+": no link leads to it from README.md")
		}
	}
	return problems
}

// splitMarkdown returns the prose of a Markdown text, without fenced code
// blocks, code spans and HTML comments, and the anchors of its headings as
// GitHub makes them.
func splitMarkdown(text string) (prose string, anchors map[string]bool) {
	anchors = make(map[string]bool)
	seen := make(map[string]int) // slug → how many headings had it
	var b strings.Builder
	fenced := false
	for line := range strings.Lines(htmlComment.ReplaceAllString(text, "")) {
		if trimmed := strings.TrimSpace(line); strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		if heading := strings.TrimLeft(line, "#"); heading != line && strings.TrimSpace(heading) != "" &&
			(heading[0] == ' ' || heading[0] == '\t') {
			slug := headingSlug(heading)
			if n := seen[slug]; n > 0 {
				anchors[fmt.Sprintf("%s-%d", slug, n)] = true
			} else {
				anchors[slug] = true
			}
			seen[slug]++
		}
		b.WriteString(codeSpan.ReplaceAllString(line, ""))
	}
	return b.String(), anchors
}

// headingSlug is GitHub's anchor for a heading's text: lower case, spaces as
// hyphens, and every other character but letters, digits, '-' and '_' left
// out.
func headingSlug(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
