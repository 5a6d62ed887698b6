package main

import (
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// versionDeps are the modules whose versions matter when reporting a problem.
var versionDeps = []string{
	"github.com/redis/go-redis/v9",
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity",
	"github.com/Azure/azure-sdk-for-go/sdk/azcore",
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", "version\n\nPrints the version of entraredis (the module version it was built from: a release tag with\n\"go install ...@version\", \"(devel)\" from a clone), the Go version, and the versions of go-redis\nand the Azure SDK it was built with.", stderr)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "entraredis version: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		fmt.Fprintln(stdout, "entraredis (unknown version: built without module information)")
		return exitOK
	}
	for _, l := range versionLines(bi) {
		fmt.Fprintln(stdout, l)
	}
	return exitOK
}

// versionLines describes bi: entraredis's version (with the VCS revision when the build recorded
// one), then Go's and the main dependencies'.
func versionLines(bi *debug.BuildInfo) []string {
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = ", modified"
			}
		}
	}
	if rev != "" {
		v += fmt.Sprintf(" (commit %.12s%s)", rev, modified)
	}
	lines := []string{"entraredis " + v, fmt.Sprintf("  %-50s %s", "go", bi.GoVersion)}
	for _, want := range versionDeps {
		for _, d := range bi.Deps {
			if d.Path != want {
				continue
			}
			dv := d.Version
			if d.Replace != nil {
				dv += " => " + strings.TrimSpace(d.Replace.Path+" "+d.Replace.Version)
			}
			lines = append(lines, fmt.Sprintf("  %-50s %s", d.Path, dv))
		}
	}
	return lines
}
