"""What the tests share: waiting on a condition, data sets, the Lambda environment, the
template's names, a model server. One place, so a fix reaches every test that uses it."""
