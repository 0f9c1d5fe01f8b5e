/* [kafka] config section through librdkafka: accepted properties reach the rd_kafka_conf_t in
 * order with the last setting winning; unknown names and bad values fail with the origin, key,
 * value and librdkafka's own reason; secret values are never echoed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "stream/kafka_conf.h"
#include "stream/kafka_conf_internal.h"

static char errstr[1024];

static void load(eddy_config_t *cfg, const char *text, const char *const *sets, size_t n_sets) {
  eddy_err_t err = eddy_config_load_string(cfg, "k.ini", text, strlen(text), sets, n_sets, errstr,
                                           sizeof errstr);
  if (err) print_error("%s\n", errstr);
  assert_int_equal(err, EDDY_OK);
}

static void expect_check_error(const char *text, const char *message) {
  eddy_config_t cfg;
  load(&cfg, text, NULL, 0);
  errstr[0] = '\0';
  eddy_err_t err = eddy_kafka_conf_check(&cfg, errstr, sizeof errstr);
  if (strcmp(errstr, message) != 0) print_error("expected: %s\n     got: %s\n", message, errstr);
  assert_int_equal(err, EDDY_ERR_CONFIG);
  assert_string_equal(errstr, message);
  errstr[0] = '\0';
  assert_null(eddy_kafka_conf_new(&cfg, errstr, sizeof errstr));
  assert_string_equal(errstr, message);
  eddy_config_free(&cfg);
}

static void test_valid_properties(void **state) {
  (void)state;
  eddy_config_t cfg;
  const char *sets[] = {"kafka.client.id=from-set"};
  load(&cfg,
       "[kafka]\n"
       "bootstrap.servers = 127.0.0.1:9092,127.0.0.1:9093\n"
       "client.id = from-file\n"
       "acks = all\n"
       "enable.auto.commit = false\n"
       "statistics.interval.ms = 1500\n",
       sets, 1);
  assert_int_equal(eddy_kafka_conf_check(&cfg, errstr, sizeof errstr), EDDY_OK);
  rd_kafka_conf_t *conf = eddy_kafka_conf_new(&cfg, errstr, sizeof errstr);
  assert_non_null(conf);
  char value[256];
  size_t n = sizeof value;
  assert_int_equal(rd_kafka_conf_get(conf, "bootstrap.servers", value, &n), RD_KAFKA_CONF_OK);
  assert_string_equal(value, "127.0.0.1:9092,127.0.0.1:9093");
  n = sizeof value;
  assert_int_equal(rd_kafka_conf_get(conf, "client.id", value, &n), RD_KAFKA_CONF_OK);
  assert_string_equal(value, "from-set"); /* the --set override wins */
  n = sizeof value;
  assert_int_equal(rd_kafka_conf_get(conf, "enable.auto.commit", value, &n), RD_KAFKA_CONF_OK);
  assert_string_equal(value, "false");
  n = sizeof value;
  assert_int_equal(rd_kafka_conf_get(conf, "statistics.interval.ms", value, &n), RD_KAFKA_CONF_OK);
  assert_string_equal(value, "1500");
  rd_kafka_conf_destroy(conf);
  eddy_config_free(&cfg);

  /* No [kafka] section: librdkafka defaults only. */
  load(&cfg, "", NULL, 0);
  assert_int_equal(eddy_kafka_conf_check(&cfg, errstr, sizeof errstr), EDDY_OK);
  eddy_config_free(&cfg);
  assert_int_equal(eddy_kafka_conf_check(NULL, errstr, sizeof errstr), EDDY_ERR_INVALID_ARG);
}

static void test_unknown_property(void **state) {
  (void)state;
  expect_check_error(
      "[kafka]\nbootstrap.servers = h:1\nbogus.prop = 1\n",
      "k.ini:3: kafka.bogus.prop = \"1\": No such configuration property: \"bogus.prop\"");
  /* An error from a --set names "--set". */
  eddy_config_t cfg;
  const char *sets[] = {"kafka.nope=x"};
  load(&cfg, "", sets, 1);
  assert_int_equal(eddy_kafka_conf_check(&cfg, errstr, sizeof errstr), EDDY_ERR_CONFIG);
  assert_string_equal(errstr,
                      "--set: kafka.nope = \"x\": No such configuration property: \"nope\"");
  eddy_config_free(&cfg);
}

static void test_bad_values(void **state) {
  (void)state;
  expect_check_error(
      "[kafka]\nauto.offset.reset = sideways\n",
      "k.ini:2: kafka.auto.offset.reset = \"sideways\": Invalid value \"sideways\" for "
      "configuration property \"auto.offset.reset\"");
  /* librdkafka ends this message with a newline; it is trimmed. */
  expect_check_error("[kafka]\nmessage.max.bytes = 5\n",
                     "k.ini:2: kafka.message.max.bytes = \"5\": Configuration property "
                     "\"message.max.bytes\" value 5 is outside allowed range 1000..1000000000");
  expect_check_error("[kafka]\nenable.auto.commit = maybe\n",
                     "k.ini:2: kafka.enable.auto.commit = \"maybe\": Expected bool value for "
                     "\"enable.auto.commit\": true or false");
}

static void test_secret_not_echoed(void **state) {
  (void)state;
  expect_check_error(
      "[kafka]\nmy.secret = hunter2\n",
      "k.ini:2: kafka.my.secret = \"***\": No such configuration property: \"my.secret\"");
  expect_check_error("[kafka]\nsasl.password.typo = hunter2\n",
                     "k.ini:2: kafka.sasl.password.typo = \"***\": No such configuration property: "
                     "\"sasl.password.typo\"");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_properties),
      cmocka_unit_test(test_unknown_property),
      cmocka_unit_test(test_bad_values),
      cmocka_unit_test(test_secret_not_echoed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
