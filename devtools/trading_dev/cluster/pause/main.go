// pause: the pod sandbox's process, and a tiny workload for the real-cluster tests.
//
// With no arguments it sleeps until SIGINT or SIGTERM (what containerd's sandbox image runs).
// -http ADDR   also answer every HTTP request with the host name (a Service's backend)
// -exit-after  exit 0 after this long (a Job's or CronJob's pod)
// -api         call the API server from inside the pod with its ServiceAccount token, through the
//              kubernetes Service, print the status and exit 0 if the server answered (any HTTP status)
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount/"

func callAPI() int {
	token, err := os.ReadFile(saDir + "token")
	if err != nil {
		fmt.Fprintln(os.Stderr, "no token:", err)
		return 1
	}
	ca, err := os.ReadFile(saDir + "ca.crt")
	if err != nil {
		fmt.Fprintln(os.Stderr, "no ca.crt:", err)
		return 1
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "kubernetes.default.svc"}}}
	url := fmt.Sprintf("https://%s:%s/api", os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT"))
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+string(token))
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "GET", url, err)
		return 1
	}
	resp.Body.Close()
	fmt.Println("GET", url, resp.StatusCode)
	return 0
}

func main() {
	addr := flag.String("http", "", "serve HTTP on this address (host name as the body)")
	exitAfter := flag.Duration("exit-after", 0, "exit 0 after this long")
	api := flag.Bool("api", false, "call the API server with the pod's ServiceAccount token and exit")
	flag.Parse()
	if *api {
		os.Exit(callAPI())
	}
	if *addr != "" {
		host, _ := os.Hostname()
		go func() {
			err := http.ListenAndServe(*addr, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				fmt.Fprintln(w, host)
			}))
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}()
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	if *exitAfter > 0 {
		select {
		case <-stop:
		case <-time.After(*exitAfter):
		}
		return
	}
	<-stop
}
