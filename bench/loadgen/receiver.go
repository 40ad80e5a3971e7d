package main

// The benchmark's webhook receiver (-serve): verifies each delivery's Standard Webhooks
// signature and answers 200, or 400 when it does not verify. Compiled, like the load
// generator, and with Go's listen backlog, so a burst of deliveries is never refused by the
// receiver itself (Python's socketserver queues only 5 connections).

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"io"
	"log"
	"net/http"
	"strings"
)

func serve(addr, secret string) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		log.Fatalf("bad secret: %v", err)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, key)
		mac.Write([]byte(r.Header.Get("webhook-id") + "." + r.Header.Get("webhook-timestamp") + "."))
		mac.Write(body)
		want := []byte("v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)))
		for _, signature := range strings.Fields(r.Header.Get("webhook-signature")) {
			if hmac.Equal([]byte(signature), want) {
				w.WriteHeader(http.StatusOK)
				return
			}
		}
		w.WriteHeader(http.StatusBadRequest)
	})
	log.Fatal(http.ListenAndServe(addr, nil))
}
