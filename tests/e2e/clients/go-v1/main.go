// whoami for aws-sdk-go v1, built in GOPATH mode against Debian's
// golang-github-aws-aws-sdk-go-dev (see tests/e2e/test_matrix.py).
//
// Credentials come from the SDK's default chain (session.NewSession), which
// ends at the EC2 instance metadata service. Only STS is pointed elsewhere:
// at $MOTO_STS_URL, in code, because this SDK predates AWS_ENDPOINT_URL_STS.
// Prints one JSON object: arn, access_key_id, provider.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go/aws"
	"github.com/aws/aws-sdk-go/aws/session"
	"github.com/aws/aws-sdk-go/service/sts"
)

func fail(what string, err error) {
	fmt.Fprintf(os.Stderr, "go-v1: %s: %v\n", what, err)
	os.Exit(1)
}

func main() {
	sess, err := session.NewSession()
	if err != nil {
		fail("session", err)
	}
	creds, err := sess.Config.Credentials.Get()
	if err != nil {
		fail("credentials", err)
	}
	cfg := aws.NewConfig()
	if u := os.Getenv("MOTO_STS_URL"); u != "" {
		cfg = cfg.WithEndpoint(u)
	}
	out, err := sts.New(sess, cfg).GetCallerIdentity(&sts.GetCallerIdentityInput{})
	if err != nil {
		fail("sts:GetCallerIdentity", err)
	}
	json.NewEncoder(os.Stdout).Encode(map[string]string{
		"arn":           aws.StringValue(out.Arn),
		"access_key_id": creds.AccessKeyID,
		"provider":      creds.ProviderName,
	})
}
