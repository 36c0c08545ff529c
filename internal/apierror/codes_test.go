package apierror

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// checkedAtLoad are the files whose codes come from configuration and are
// checked against Codes when it loads.
var checkedAtLoad = map[string]bool{"caddymodule/staticerror/staticerror.go": true}

// codeArg is where each constructor that takes a code has it.
var codeArg = map[string]int{"New": 2, "InvalidRequest": 0, "Authentication": 0, "Permission": 0, "Unavailable": 0}

// Every code the source passes to a constructor is in Codes, so the docs
// page, doc_url's anchors and api_error's check know it. A code that is not
// a string literal is refused too: this test could not see it.
func TestCodesInTheSourceAreCatalogued(t *testing.T) {
	known := map[string]bool{}
	for _, c := range Codes {
		known[c.Code] = true
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		inPackage := f.Name.Name == "apierror"
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			var name string
			switch fn := call.Fun.(type) {
			case *ast.SelectorExpr:
				if x, ok := fn.X.(*ast.Ident); ok && x.Name == "apierror" {
					name = fn.Sel.Name
				}
			case *ast.Ident:
				if inPackage {
					name = fn.Name
				}
			}
			i, ok := codeArg[name]
			if !ok || len(call.Args) <= i {
				return true
			}
			at := fset.Position(call.Pos())
			lit, ok := call.Args[i].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				rel, _ := filepath.Rel(root, path)
				if !inPackage && !checkedAtLoad[filepath.ToSlash(rel)] { // the package's own helpers pass their parameter on
					t.Errorf("%s:%d: apierror.%s with a code that is not a string literal", at.Filename, at.Line, name)
				}
				return true
			}
			code, _ := strconv.Unquote(lit.Value)
			seen++
			if !known[code] {
				t.Errorf("%s:%d: code %q is not in apierror.Codes", at.Filename, at.Line, code)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen < 50 {
		t.Fatalf("found only %d codes in the source; is the walk reading the module?", seen)
	}
}
