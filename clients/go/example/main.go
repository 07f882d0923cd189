// Command example streams a horoscope from a running mesh, word by word:
//
//	go run ./example [-addr 127.0.0.1:8080] [PROMPT]
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	horoscoperv1 "github.com/horoscoper/horoscoper/clients/go/horoscoper/v1"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "the gateway's address")
	flag.Parse()
	prompt := "What does my week look like?"
	if flag.NArg() > 0 {
		prompt = strings.Join(flag.Args(), " ")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, *addr, prompt, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// run streams the horoscope for prompt to w, then says which batch served it.
func run(ctx context.Context, addr, prompt string, w io.Writer) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	stream, err := horoscoperv1.NewHoroscoperClient(conn).Infer(ctx, &horoscoperv1.InferRequest{Prefix: prompt})
	if err != nil {
		return err
	}
	for {
		response, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		fmt.Fprint(w, response.GetText())
		if response.GetLast() {
			batch := response.GetBatch()
			fmt.Fprintf(w, "\n(batch %d of %d on %s)\n", batch.GetBatchId(), batch.GetBatchSize(), batch.GetWorkerId())
		}
	}
}
