package readme

import (
	"bufio"
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const root = "../.."

// repoFiles returns the repository's files, relative to its root: git's tracked files, or, where
// there is no git (make test-newest's copy of the tree), every file outside .git.
func repoFiles(t *testing.T) []string {
	t.Helper()
	if out, err := exec.Command("git", "-C", root, "ls-files", "-z").Output(); err == nil && len(out) > 0 {
		return strings.Split(strings.TrimRight(string(out), "\x00"), "\x00")
	}
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == ".git" {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	require.NoError(t, err)
	return files
}

// conflictMarker matches the lines git writes around a merge conflict (diff3's base marker too).
var conflictMarker = regexp.MustCompile(`^(<<<<<<< |>>>>>>> |\|\|\|\|\|\|\| |=======$)`)

// conflictMarkers returns "line N: text" for each conflict marker in b.
func conflictMarkers(b []byte) []string {
	var found []string
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(nil, 1<<20)
	for n := 1; s.Scan(); n++ {
		if conflictMarker.Match(s.Bytes()) {
			found = append(found, "line "+strconv.Itoa(n)+": "+s.Text())
		}
	}
	return found
}

func TestConflictMarkersFound(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		want int
	}{
		{"clean", "a\nb\n", 0},
		{"a merge conflict", "a\n<<<<<<< HEAD\nb\n=======\nc\n>>>>>>> topic\n", 3},
		{"diff3 style", "<<<<<<< ours\nb\n||||||| base\na\n=======\nc\n>>>>>>> theirs\n", 4},
		{"longer rule, indented marker", "title\n========\n  <<<<<<< x\n", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Len(t, conflictMarkers([]byte(tc.text)), tc.want)
		})
	}
}

// TestNoConflictMarkers: no text file of the repository holds a merge-conflict marker (one was
// committed in the README's Layout table once, and GitHub rendered the rest as loose text).
func TestNoConflictMarkers(t *testing.T) {
	files := repoFiles(t)
	require.NotEmpty(t, files)
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil || bytes.IndexByte(b, 0) >= 0 {
			continue // deleted in the working tree, or binary
		}
		checked++
		assert.Empty(t, conflictMarkers(b), "%s: merge-conflict markers are committed: resolve the conflict", f)
	}
	t.Logf("%d text files checked", checked)
}

// TestLayoutTable: docs/layout.md's Layout table names every folder of the repository that holds files
// (testdata excepted), and each folder it names exists.
func TestLayoutTable(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, "docs/layout.md"))
	require.NoError(t, err)
	listed := map[string]bool{}
	cell := regexp.MustCompile("`([^`]+)`")
	_, layout, _ := strings.Cut(string(b), "\n## Layout\n")
	layout, _, _ = strings.Cut(layout, "\n## ")
	for _, line := range strings.Split(layout, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.SplitN(line[1:], "|", 2)[0]
		for _, m := range cell.FindAllStringSubmatch(first, -1) {
			listed[strings.TrimSuffix(m[1], "/")] = true
		}
	}
	require.NotEmpty(t, listed, "docs/layout.md: no rows starting with a `folder` under ## Layout")
	folders := map[string]bool{}
	for _, f := range repoFiles(t) {
		d := filepath.ToSlash(filepath.Dir(f))
		if d == "." || strings.Contains("/"+d+"/", "/testdata/") || strings.HasPrefix(d, "docs") {
			continue
		}
		folders[d] = true
	}
	var missing []string
	for d := range folders {
		if !listed[d] {
			missing = append(missing, d)
		}
	}
	sort.Strings(missing)
	assert.Empty(t, missing, "docs/layout.md's Layout table misses these folders")
	for p := range listed {
		if p == "entraredis" { // the root package, by its name
			continue
		}
		_, err := os.Stat(filepath.Join(root, p))
		assert.NoError(t, err, "docs/layout.md names %q, which does not exist", p)
	}
}
