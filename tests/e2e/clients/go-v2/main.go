// whoami for aws-sdk-go-v2, built in GOPATH mode against Debian's
// golang-github-aws-aws-sdk-go-v2-dev (see tests/e2e/test_matrix.py).
//
// Credentials come from config.LoadDefaultConfig's chain, which ends at
// credentials/ec2rolecreds (the instance metadata service). Only STS is
// pointed elsewhere: at $MOTO_STS_URL, in code, because this SDK predates
// AWS_ENDPOINT_URL_STS. Prints one JSON object: arn, access_key_id, provider.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "go-v2: %s: %v\n", what, err)
	os.Exit(1)
}

func main() {
	ctx := context.Background()
	cfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		fail("config", err)
	}
	creds, err := cfg.Credentials.Retrieve(ctx)
	if err != nil {
		fail("credentials", err)
	}
	client := sts.NewFromConfig(cfg, func(o *sts.Options) {
		if u := os.Getenv("MOTO_STS_URL"); u != "" {
			o.EndpointResolver = sts.EndpointResolverFromURL(u)
		}
	})
	out, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
	if err != nil {
		fail("sts:GetCallerIdentity", err)
	}
	json.NewEncoder(os.Stdout).Encode(map[string]string{
		"arn":           aws.ToString(out.Arn),
		"access_key_id": creds.AccessKeyID,
		"provider":      creds.Source,
	})
}
