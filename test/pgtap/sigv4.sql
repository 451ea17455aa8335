-- The SigV4 signer (settle.sigv4_authorization, the object-storage
-- connector's) reproduces AWS's published examples: the Signature Version 4
-- test suite's get-vanilla, get-vanilla-query-order-key-case and
-- post-vanilla (credentials AKIDEXAMPLE, 2015-08-30T12:36:00Z, us-east-1,
-- service "service"), and the Amazon S3 API Reference's "Examples:
-- Signature Calculations" for GET Object with a Range, GET Bucket
-- Lifecycle and GET Bucket (List Objects) (examplebucket, 2013-05-24).
-- The expected signatures are those the documents publish.
BEGIN;
SELECT plan(14);

SELECT has_function('settle', 'sigv4_authorization',
	ARRAY['text', 'text', 'jsonb', 'jsonb', 'text', 'text', 'text', 'text', 'text'],
	'sigv4_authorization has its documented signature');

CREATE TEMP TABLE v (name text, method text, path text, query jsonb, headers jsonb,
	key text, secret text, region text, service text, expected text);
INSERT INTO v VALUES
 ('get-vanilla', 'GET', '/', '{}',
  '{"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}',
  'AKIDEXAMPLE', 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', 'us-east-1', 'service',
  'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31'),
 ('get-vanilla-query-order-key-case', 'GET', '/', '{"Param2": "value2", "Param1": "value1"}',
  '{"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}',
  'AKIDEXAMPLE', 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', 'us-east-1', 'service',
  'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500'),
 ('post-vanilla', 'POST', '/', '{}',
  '{"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}',
  'AKIDEXAMPLE', 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', 'us-east-1', 'service',
  'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b'),
 ('S3 GET Object', 'GET', '/test.txt', '{}',
  '{"Host": "examplebucket.s3.amazonaws.com", "Range": "bytes=0-9", "x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "x-amz-date": "20130524T000000Z"}',
  'AKIAIOSFODNN7EXAMPLE', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'us-east-1', 's3',
  'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41'),
 ('S3 GET Bucket Lifecycle', 'GET', '/', '{"lifecycle": ""}',
  '{"Host": "examplebucket.s3.amazonaws.com", "x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "x-amz-date": "20130524T000000Z"}',
  'AKIAIOSFODNN7EXAMPLE', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'us-east-1', 's3',
  'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543'),
 ('S3 GET Bucket (List Objects)', 'GET', '/', '{"max-keys": "2", "prefix": "J"}',
  '{"Host": "examplebucket.s3.amazonaws.com", "x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "x-amz-date": "20130524T000000Z"}',
  'AKIAIOSFODNN7EXAMPLE', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY', 'us-east-1', 's3',
  'AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7');

SELECT is(settle.sigv4_authorization(method, path, query, headers,
		'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', key, secret, region, service),
	expected, 'published example: ' || name)
  FROM v ORDER BY name;

-- header values are trimmed and inner runs of blanks folded before signing
SELECT is(settle.sigv4_authorization('GET', '/', '{}',
		'{"Host": "  example.amazonaws.com ", "X-Amz-Date": "20150830T123600Z"}',
		'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
		'AKIDEXAMPLE', 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', 'us-east-1', 'service'),
	(SELECT expected FROM v WHERE name = 'get-vanilla'), 'header values are trimmed');
-- the path is signed encoded once: a key with a space differs from one without
SELECT isnt(settle.sigv4_authorization('GET', '/a b.csv', '{}', '{"host": "h", "x-amz-date": "20150830T123600Z"}',
		'UNSIGNED-PAYLOAD', 'k', 's', 'r', 's3'),
	settle.sigv4_authorization('GET', '/a%20b.csv', '{}', '{"host": "h", "x-amz-date": "20150830T123600Z"}',
		'UNSIGNED-PAYLOAD', 'k', 's', 'r', 's3'), 'a literal "%" in a key is encoded, not taken as an escape');
SELECT unalike(settle.sigv4_authorization('GET', '/', '{}', '{"host": "h", "x-amz-date": "20150830T123600Z"}',
		'UNSIGNED-PAYLOAD', 'AKID', 'the-secret', 'r', 's3'), '%the-secret%', 'the secret is not in the header value');

SELECT throws_ok($$SELECT settle.sigv4_authorization('GET', '/', '{}', '{"host": "h"}',
		'UNSIGNED-PAYLOAD', 'k', 's', 'r', 's3')$$,
	'22023', NULL, 'no x-amz-date: 22023');
SELECT throws_ok($$SELECT settle.sigv4_authorization('GET', '/', '{}', '{"host": "h", "x-amz-date": "2015-08-30T12:36:00Z"}',
		'UNSIGNED-PAYLOAD', 'k', 's', 'r', 's3')$$,
	'22023', NULL, 'an x-amz-date not in the basic ISO 8601 form: 22023');
SELECT throws_ok($$SELECT settle.sigv4_authorization('GET', '/', '{}', '{"host": "h", "x-amz-date": "20150830T123600Z"}',
		'E3B0', 'k', 's', 'r', 's3')$$,
	'22023', NULL, 'a payload hash that is not 64 lower-case hex digits: 22023');
SELECT throws_ok($$SELECT settle.sigv4_authorization('GET', 'test.txt', '{}', '{"host": "h", "x-amz-date": "20150830T123600Z"}',
		'UNSIGNED-PAYLOAD', 'k', 's', 'r', 's3')$$,
	'22023', NULL, 'a path not starting with "/": 22023');

SELECT * FROM finish();
ROLLBACK;
