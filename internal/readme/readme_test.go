// Package readme holds the Go snippets of README.md and docs/*.md as compiled files: each ```go block
// must appear, byte for byte, in one of this package's files (or rueidisentra/readme_test.go, for
// the rueidis snippet), so that a snippet with a wrong import, an undeclared name or an unchecked
// error fails the build. The snippets are compiled, not run: they need Azure. The package also
// checks the repository's text: no merge-conflict markers, the Layout table true.
package readme

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var goBlock = regexp.MustCompile("(?s)```go\n(.*?)```")

// docs returns README.md and docs/*.md, by name.
func docs(t *testing.T) map[string]string {
	t.Helper()
	names, err := filepath.Glob("../../docs/*.md")
	require.NoError(t, err)
	require.NotEmpty(t, names, "docs/*.md")
	out := map[string]string{}
	for _, n := range append(names, "../../README.md") {
		b, err := os.ReadFile(n)
		require.NoError(t, err)
		out[strings.TrimPrefix(n, "../../")] = string(b)
	}
	return out
}

func TestSnippetsCompile(t *testing.T) {
	files, err := filepath.Glob("*_test.go")
	require.NoError(t, err)
	nested, err := filepath.Glob("../../rueidisentra/readme_test.go") // its own module: rueidis
	require.NoError(t, err)
	files = append(files, nested...)
	var sources []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		sources = append(sources, string(b))
	}
	n := 0
	for name, text := range docs(t) {
		for _, b := range goBlock.FindAllStringSubmatch(text, -1) {
			n++
			found := false
			for _, s := range sources {
				found = found || strings.Contains(s, b[1])
			}
			first, _, _ := strings.Cut(strings.TrimPrefix(b[1], "import (\n"), "\n")
			assert.True(t, found, "%s: snippet starting %q is in no file of internal/readme: copy it there, whole, so that it compiles", name, first)
			assert.True(t, strings.HasPrefix(b[1], "import ("), "%s: snippet starting %q has no import block", name, first)
		}
	}
	require.NotZero(t, n)
	t.Logf("%d snippets compiled", n)
}

// The first commands a reader sees, and the install lines.
func TestInstallLines(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	for _, line := range []string{
		"go run ./cmd/entraredis demo",
		"make test",
		"go get github.com/entraredis/entraredis@latest",
		"go install github.com/entraredis/entraredis/cmd/entraredis@latest",
	} {
		assert.Regexp(t, "(?m)^"+regexp.QuoteMeta(line)+"( |$)", string(readme), "README: a line starting with the command")
	}
}
