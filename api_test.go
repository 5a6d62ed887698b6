package entraredis

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// apiBudget is the most exported identifiers the library's packages may have together (issue 11:
// 95 made the API about 30 % larger than its job; x/oauth2's root package has 44). 76 since
// certificate loading moved to a package of its own (provider/certcred, so that other identities
// link no certificate parsing) while hook gained ErrTokenRefused; rueidisentra and valkeyentra
// reach the provider's schedule through internal/renewal, not through exported names. 77 with
// Provider.SubscribeWithContext, which go-redis v9.24's auth.ContextStreamingCredentialsProvider
// asks for by name (issue 25).
const apiBudget = 77

// exported lists a package's exported identifiers as go doc shows them: top-level types, functions,
// variables and constants, and the exported methods of exported types. Struct fields are not
// counted: they are options and results, read in their type's documentation.
func exported(t *testing.T, dir string) []string {
	t.Helper()
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, dir, func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	require.NoError(t, err)
	var names []string
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			for _, d := range f.Decls {
				switch d := d.(type) {
				case *ast.FuncDecl:
					if !d.Name.IsExported() {
						continue
					}
					if d.Recv == nil {
						names = append(names, d.Name.Name)
						continue
					}
					recv := d.Recv.List[0].Type
					if star, ok := recv.(*ast.StarExpr); ok {
						recv = star.X
					}
					if id, ok := recv.(*ast.Ident); ok && id.IsExported() {
						names = append(names, id.Name+"."+d.Name.Name)
					}
				case *ast.GenDecl:
					for _, s := range d.Specs {
						switch s := s.(type) {
						case *ast.TypeSpec:
							if s.Name.IsExported() {
								names = append(names, s.Name.Name)
							}
						case *ast.ValueSpec:
							for _, n := range s.Names {
								if n.IsExported() {
									names = append(names, n.Name)
								}
							}
						}
					}
				}
			}
		}
	}
	return names
}

func TestExportedIdentifierBudget(t *testing.T) {
	total := 0
	for _, dir := range []string{".", "provider", "provider/certcred", "hook", "retry", "jwtutil"} {
		names := exported(t, dir)
		total += len(names)
		t.Logf("%-8s %2d: %s", dir, len(names), strings.Join(names, " "))
	}
	t.Logf("%d exported identifiers in all (budget %d)", total, apiBudget)
	assert.LessOrEqual(t, total, apiBudget, "exported identifiers across the library's packages: remove one for each you add")
}
