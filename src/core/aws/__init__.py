"""DynamoDB and Secrets Manager without botocore's client (client says why): the signed JSON
calls (client, sigv4), botocore's standard retry mode (failures), the connection pool
(transport), where to connect and as whom (config), and the table the DynamoDB adapters share
(dynamodb)."""
