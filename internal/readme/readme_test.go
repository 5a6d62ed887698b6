// Package readme holds the README's Go snippets as compiled files: each ```go block of README.md
// must appear, byte for byte, in one of this package's files, so that a snippet with a wrong
// import, an undeclared name or an unchecked error fails the build. The snippets are compiled, not
// run: they need Azure.
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

func TestSnippetsCompile(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
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
	blocks := goBlock.FindAllStringSubmatch(string(readme), -1)
	require.NotEmpty(t, blocks)
	for _, b := range blocks {
		found := false
		for _, s := range sources {
			found = found || strings.Contains(s, b[1])
		}
		first, _, _ := strings.Cut(strings.TrimPrefix(b[1], "import (\n"), "\n")
		assert.True(t, found, "README snippet starting %q is in no file of internal/readme: copy it there, whole, so that it compiles", first)
		assert.True(t, strings.HasPrefix(b[1], "import ("), "README snippet starting %q has no import block", first)
	}
	t.Logf("%d README snippets compiled", len(blocks))
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
