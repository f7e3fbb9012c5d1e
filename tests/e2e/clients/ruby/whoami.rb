# whoami for the AWS SDK for Ruby (Debian's ruby-aws-sdk-core, which carries
# the STS client itself). See tests/e2e/test_matrix.py.
#
# Credentials come from the SDK's default chain (Aws::CredentialProviderChain),
# which ends at Aws::InstanceProfileCredentials (the instance metadata service).
# Only STS is pointed elsewhere: at $MOTO_STS_URL, in code, because this SDK
# predates AWS_ENDPOINT_URL_STS. Prints one JSON object: arn, access_key_id, provider.
require 'json'
require 'aws-sdk-core'

opts = {}
opts[:endpoint] = ENV['MOTO_STS_URL'] if ENV['MOTO_STS_URL']
sts = Aws::STS::Client.new(opts)
provider = sts.config.credentials
if provider.nil? || !provider.set?
  warn 'ruby: no credentials from the default chain'
  exit 3
end
who = sts.get_caller_identity
puts JSON.generate('arn' => who.arn,
                   'access_key_id' => provider.credentials.access_key_id,
                   'provider' => provider.class.name)
