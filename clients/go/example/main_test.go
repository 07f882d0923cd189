package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	horoscoperv1 "github.com/horoscoper/horoscoper/clients/go/horoscoper/v1"
)

// The running mesh's gateway (started by `just test-clients`).
func gateway() string {
	if addr := os.Getenv("HOROSCOPER_ADDR"); addr != "" {
		return addr
	}
	return "127.0.0.1:8080"
}

// grpcurlText is the whole horoscope real grpcurl streams for prefix.
func grpcurlText(t *testing.T, prefix string) string {
	t.Helper()
	program := os.Getenv("GRPCURL")
	if program == "" {
		program = "grpcurl"
	}
	request, _ := json.Marshal(map[string]string{"prefix": prefix})
	output, err := exec.Command(program, "-plaintext", "-d", string(request), gateway(), "horoscoper.v1.Horoscoper/Infer").Output()
	if err != nil {
		t.Fatalf("grpcurl: %v", err)
	}
	// One JSON object per response, one after the other.
	var text strings.Builder
	decoder := json.NewDecoder(bytes.NewReader(output))
	for decoder.More() {
		var response struct{ Text string }
		if err := decoder.Decode(&response); err != nil {
			t.Fatalf("grpcurl printed %q: %v", output, err)
		}
		text.WriteString(response.Text)
	}
	return text.String()
}

func client(t *testing.T) horoscoperv1.HoroscoperClient {
	t.Helper()
	conn, err := grpc.NewClient(gateway(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return horoscoperv1.NewHoroscoperClient(conn)
}

func TestStreamsTheSameHoroscopeGrpcurlGets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prompt := "Will the Go client see the stars?"
	stream, err := client(t).Infer(ctx, &horoscoperv1.InferRequest{Prefix: prompt})
	if err != nil {
		t.Fatal(err)
	}
	var tokens []*horoscoperv1.InferResponse
	for {
		response, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		tokens = append(tokens, response)
	}
	var text strings.Builder
	for i, token := range tokens {
		text.WriteString(token.GetText())
		if last := i == len(tokens)-1; token.GetLast() != last {
			t.Errorf("token %d: last = %v", i, token.GetLast())
		}
	}
	if want := grpcurlText(t, prompt); text.String() != want {
		t.Errorf("got %q, grpcurl got %q", text.String(), want)
	}
	if batch := tokens[len(tokens)-1].GetBatch(); batch.GetBatchSize() < 1 || batch.GetWorkerId() == "" {
		t.Errorf("the last token names its batch: %v", batch)
	}
}

func TestAPrefixOver1024CharactersIsInvalid(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := client(t).Infer(ctx, &horoscoperv1.InferRequest{Prefix: strings.Repeat("x", 1025)})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "at most 1024") {
		t.Fatalf("want InvalidArgument naming the limit, got %v", err)
	}
}

func TestTheExampleRuns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, gateway(), "hello", &out); err != nil {
		t.Fatal(err)
	}
	if want := grpcurlText(t, "hello"); !strings.HasPrefix(out.String(), want+"\n(batch ") {
		t.Errorf("got %q", out.String())
	}
}
