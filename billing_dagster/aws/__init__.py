"""AWS: the boto3 clients the metered-service meters read through, and the embedded AWS
(moto's server on loopback) that stands in for it in the demo, dev and tests."""
