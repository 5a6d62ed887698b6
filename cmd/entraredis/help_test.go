package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHelpCommand(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want []string // in stdout (stderr when the code is not exitOK)
	}{
		{[]string{"help"}, exitOK, []string{"entraredis demo", "entraredis check", "--every 1s", "--progress 1s", "entraredis version"}},
		{[]string{"help", "help"}, exitOK, []string{"Usage:"}},
		{[]string{"help", "demo"}, exitOK, []string{"Usage: entraredis demo", "-lifetime", "-progress", "-metrics"}},
		{[]string{"help", "check"}, exitOK, []string{"Usage: entraredis check", "-every", "-watch"}},
		{[]string{"help", "token"}, exitOK, []string{"Usage: entraredis token"}},
		{[]string{"help", "version"}, exitOK, []string{"Usage: entraredis version"}},
		{[]string{"help", "nope"}, exitUsage, []string{`unknown command "nope"`}},
		{[]string{"help", "demo", "check"}, exitUsage, []string{"give one command"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, out, errOut := cli(t, "", tc.args...)
			assert.Equal(t, tc.code, code)
			where := out
			if tc.code == exitOK {
				assert.Empty(t, errOut, "help asked for is not an error")
			} else {
				where = errOut
			}
			for _, w := range tc.want {
				assert.Contains(t, where, w)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}} {
		code, out, _ := cli(t, "", args...)
		require.Equal(t, exitOK, code)
		assert.True(t, strings.HasPrefix(out, "entraredis "), out)
		assert.Contains(t, out, runtime.Version())
		assert.Contains(t, out, "github.com/redis/go-redis/v9")
	}
	code, _, errOut := cli(t, "", "version", "extra")
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, errOut, "unexpected argument")

	bi := &debug.BuildInfo{
		GoVersion: "go1.26.0",
		Main:      debug.Module{Path: "github.com/entraredis/entraredis", Version: "v1.2.3"},
		Deps: []*debug.Module{
			{Path: "github.com/redis/go-redis/v9", Version: "v9.23.0"},
			{Path: "github.com/Azure/azure-sdk-for-go/sdk/azidentity", Version: "v1.15.0", Replace: &debug.Module{Path: "../azidentity"}},
			{Path: "golang.org/x/sync", Version: "v0.25.0"},
		},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}},
	}
	lines := versionLines(bi)
	require.Len(t, lines, 4)
	assert.Equal(t, "entraredis v1.2.3 (commit 0123456789ab, modified)", lines[0])
	assert.Regexp(t, `^  go\s+go1\.26\.0$`, lines[1])
	assert.Regexp(t, `^  github.com/redis/go-redis/v9\s+v9\.23\.0$`, lines[2])
	assert.Regexp(t, `azidentity\s+v1\.15\.0 => \.\./azidentity$`, lines[3])
	assert.Equal(t, "entraredis (devel)", versionLines(&debug.BuildInfo{})[0])
}
