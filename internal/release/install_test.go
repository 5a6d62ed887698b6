// Package release checks that the modules install as a user's go get installs them: not through the
// replace directives that serve work inside this repository, which Go ignores outside it.
package release

import (
	"archive/zip"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/entraredis/entraredis/internal/testutil"
)

const (
	root   = "../.."
	module = "github.com/entraredis/entraredis"
)

// TestInstallFromProxy: a scratch module outside the repository gets rueidisentra through a module
// proxy made from the working tree (the root module and rueidisentra, each at the version
// rueidisentra/go.mod requires of the root), with its own empty module cache so that no earlier
// download of the same version hides a change, then builds and runs the package's example (the
// Entra emulator and a real redis-server). It fails while a nested go.mod requires a version of the
// root that does not exist (the v0.0.0-00010101000000-000000000000 placeholder did), or while the
// root module at that version lacks what the nested one uses.
//
// Third-party modules come from this machine's module cache (read as a file proxy) and, for what
// is not there, the configured GOPROXY. Checksums are not looked up (GOSUMDB=off): the modules made
// here are in no checksum database, and the test is about resolution, not the checksum database.
func TestInstallFromProxy(t *testing.T) {
	testutil.Slow(t)
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("needs redis-server (make test installs it)")
	}
	version := requiredRoot(t, "rueidisentra")
	// A tag, not a pseudo-version: a user's go get finds only versions that exist upstream, and the
	// root is released by tag (RELEASING.md); v0.0.0-00010101000000-000000000000 never will exist.
	require.Regexp(t, `^v\d+\.\d+\.\d+(-rc\.\d+)?$`, version, "rueidisentra/go.mod must require a tagged version of the root module")
	assert.Equal(t, version, requiredRoot(t, "valkeyentra"), "the nested modules require the same root version")
	proxy := t.TempDir()
	addModule(t, proxy, module, root, version)
	addModule(t, proxy, module+"/rueidisentra", filepath.Join(root, "rueidisentra"), version)

	scratch := t.TempDir()
	src, want := exampleProgram(t)
	require.NoError(t, os.WriteFile(filepath.Join(scratch, "main.go"), []byte(src), 0o644))
	cache := t.TempDir()
	t.Cleanup(func() {
		_ = filepath.WalkDir(cache, func(p string, d fs.DirEntry, _ error) error { return os.Chmod(p, 0o755) })
	})
	env := append(os.Environ(),
		"GOPROXY=file://"+filepath.ToSlash(proxy)+",file://"+filepath.ToSlash(filepath.Join(goEnv(t, "GOMODCACHE"), "cache", "download"))+","+goEnv(t, "GOPROXY"),
		"GOMODCACHE="+cache, "GOFLAGS=-mod=mod", "GOSUMDB=off", "GOWORK=off", "GOTOOLCHAIN=local",
		"GOPRIVATE=", "GONOPROXY=", "GONOSUMDB=", "GOINSECURE=",
	)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir, cmd.Env = scratch, env
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "go %s:\n%s", strings.Join(args, " "), out)
		return string(out)
	}
	start := time.Now()
	run("mod", "init", "example.com/scratch")
	run("get", module+"/rueidisentra@"+version)
	out := run("run", "-trimpath", ".")
	t.Logf("go get %s/rueidisentra@%s, build and run: %v", module, version, time.Since(start).Round(100*time.Millisecond))
	assert.Equal(t, want, out, "the example's // Output:")
	got := strings.Fields(run("list", "-m", module, module+"/rueidisentra"))
	assert.Equal(t, []string{module, version, module + "/rueidisentra", version}, got, "the versions resolved (no replace)")
}

// exampleProgram turns rueidisentra's example file into a program: its Example becomes main, and
// want is what its // Output: comment says the program prints.
func exampleProgram(t *testing.T) (src, want string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "rueidisentra", "example_test.go"))
	require.NoError(t, err)
	src = string(b)
	require.Contains(t, src, "package rueidisentra_test\n")
	require.Contains(t, src, "\nfunc Example() {\n")
	src = strings.Replace(src, "package rueidisentra_test\n", "package main\n", 1)
	src = strings.Replace(src, "\nfunc Example() {\n", "\nfunc main() {\n", 1)
	src = regexp.MustCompile(`\nfunc Example`).ReplaceAllString(src, "\nfunc example") // the others: unused
	_, out, ok := strings.Cut(src[strings.Index(src, "\nfunc main() {\n"):], "\t// Output:\n")
	require.True(t, ok, "rueidisentra's Example has no // Output: comment")
	for _, line := range strings.Split(out, "\n") {
		text, ok := strings.CutPrefix(line, "\t// ")
		if !ok {
			break
		}
		want += text + "\n"
	}
	return src, want
}

// requiredRoot returns the version of the root module that dir/go.mod requires.
func requiredRoot(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, dir, "go.mod"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(module) + `\s+(v\S+)`).FindSubmatch(b)
	require.NotNil(t, m, "%s/go.mod does not require %s", dir, module)
	return string(m[1])
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	require.NoError(t, err)
	return strings.TrimSpace(string(out))
}

// addModule writes path@version to the file proxy at proxy (GOPROXY protocol: list, .info, .mod,
// .zip), made from the module in dir as it is in the working tree.
func addModule(t *testing.T, proxy, path, dir, version string) {
	t.Helper()
	at := filepath.Join(proxy, filepath.FromSlash(path), "@v")
	require.NoError(t, os.MkdirAll(at, 0o755))
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	require.NoError(t, err)
	info, err := json.Marshal(map[string]string{"Version": version, "Time": time.Now().UTC().Format(time.RFC3339)})
	require.NoError(t, err)
	for name, b := range map[string][]byte{"list": []byte(version + "\n"), version + ".info": info, version + ".mod": gomod} {
		require.NoError(t, os.WriteFile(filepath.Join(at, name), b, 0o644))
	}
	f, err := os.Create(filepath.Join(at, version+".zip"))
	require.NoError(t, err)
	defer f.Close()
	zw := zip.NewWriter(f)
	// A module's zip holds its tree but not .git, nor nested modules (folders with a go.mod of their
	// own), nor vendor; each name is prefixed with path@version/.
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if d.IsDir() {
			if rel != "." && (d.Name() == ".git" || d.Name() == "vendor") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		w, err := zw.Create(path + "@" + version + "/" + filepath.ToSlash(rel))
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	})
	require.NoError(t, err)
	require.NoError(t, zw.Close())
}
