// promql-check parses PromQL expressions, one per line on stdin, with Prometheus' own parser.
// It prints each expression that does not parse, with the parser's error, and exits 1 if any.
// The chart tests feed it every PrometheusRule expression and every dashboard query.
package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	bad := 0
	for scanner.Scan() {
		expr := scanner.Text()
		if expr == "" {
			continue
		}
		if _, err := parser.ParseExpr(expr); err != nil {
			fmt.Printf("%s\t%v\n", expr, err)
			bad++
		}
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if bad > 0 {
		os.Exit(1)
	}
}
