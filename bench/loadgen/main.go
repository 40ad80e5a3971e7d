// loadgen: POST /v1/payments at a fixed concurrency (closed loop) or a fixed rate (open loop),
// each request with a unique Idempotency-Key; prints one JSON summary on stdout. With -serve
// it is the benchmark's webhook receiver instead (receiver.go).
//
// A compiled load generator, so the client costs little CPU next to the server it measures
// (the bench reports its CPU share to show it).
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

type result struct {
	Requests  int            `json:"requests"`
	Accepted  int            `json:"accepted"`
	Statuses  map[string]int `json:"statuses"`
	Seconds   float64        `json:"seconds"`
	PerS      float64        `json:"accepted_per_s"`
	P50Ms     float64        `json:"p50_ms"`
	P99Ms     float64        `json:"p99_ms"`
	MaxMs     float64        `json:"max_ms"`
	MaxLagMs  float64        `json:"max_schedule_lag_ms"`
	OfferedPS float64        `json:"offered_per_s,omitempty"`
}

type recorder struct {
	mu        sync.Mutex
	latencies []time.Duration
	statuses  map[string]int
	accepted  int
	maxLag    time.Duration
}

func (r *recorder) add(status string, took time.Duration, lag time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.statuses[status]++
	if status == "202" {
		r.accepted++
		r.latencies = append(r.latencies, took)
	}
	if lag > r.maxLag {
		r.maxLag = lag
	}
}

func main() {
	url := flag.String("url", "http://127.0.0.1:8000", "API base URL")
	key := flag.String("key", "", "merchant API key")
	run := flag.String("run", "lg", "prefix of the idempotency keys")
	concurrency := flag.Int("concurrency", 16, "requests in flight (closed loop)")
	rate := flag.Float64("rate", 0, "requests per second (open loop); 0 = closed loop")
	duration := flag.Duration("duration", 10*time.Second, "how long to send (at most)")
	count := flag.Int64("count", 0, "closed loop: stop after this many requests (0: no limit)")
	listen := flag.String("serve", "", "run the webhook receiver on this address instead")
	secret := flag.String("secret", "", "with -serve: the endpoint's whsec_ secret")
	flag.Parse()
	if *listen != "" {
		serve(*listen, *secret)
		return
	}

	body := []byte(`{"amount":1999,"currency":"USD","payment_method":"pm_card_visa"}`)
	transport := &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, MaxConnsPerHost: 0}
	client := &http.Client{Transport: transport, Timeout: 60 * time.Second}
	rec := &recorder{statuses: map[string]int{}}
	var counter atomic.Int64

	send := func(scheduled time.Time, n int64) {
		req, _ := http.NewRequest("POST", *url+"/v1/payments", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+*key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", fmt.Sprintf("%s-%d", *run, n))
		start := time.Now()
		resp, err := client.Do(req)
		took := time.Since(start)
		status := "error"
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status = fmt.Sprint(resp.StatusCode)
		}
		// Open loop: latency counts from when the request was due, so a stalled
		// client cannot hide queueing (no coordinated omission).
		lag := time.Duration(0)
		if !scheduled.IsZero() {
			took, lag = time.Since(scheduled), start.Sub(scheduled)
		}
		rec.add(status, took, lag)
	}

	began := time.Now()
	end := began.Add(*duration)
	var wg sync.WaitGroup
	if *rate > 0 {
		interval := time.Duration(float64(time.Second) / *rate)
		for i := 0; ; i++ {
			due := began.Add(time.Duration(i) * interval)
			if !due.Before(end) {
				break
			}
			time.Sleep(time.Until(due))
			wg.Add(1)
			go func(due time.Time, n int64) { defer wg.Done(); send(due, n) }(due, counter.Add(1))
		}
	} else {
		for w := 0; w < *concurrency; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(end) {
					n := counter.Add(1)
					if *count > 0 && n > *count {
						counter.Add(-1)
						return
					}
					send(time.Time{}, n)
				}
			}()
		}
	}
	wg.Wait()
	elapsed := time.Since(began).Seconds()
	if *rate > 0 {
		elapsed = duration.Seconds()
	}
	sort.Slice(rec.latencies, func(i, j int) bool { return rec.latencies[i] < rec.latencies[j] })
	out := result{
		Requests: int(counter.Load()), Accepted: rec.accepted, Statuses: rec.statuses,
		Seconds: elapsed, PerS: float64(rec.accepted) / elapsed,
		P50Ms: pct(rec.latencies, 0.50), P99Ms: pct(rec.latencies, 0.99),
		MaxMs: pct(rec.latencies, 1.0), MaxLagMs: ms(rec.maxLag), OfferedPS: *rate,
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

func pct(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted)-1) + 0.5)
	return ms(sorted[i])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
