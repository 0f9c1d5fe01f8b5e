/* `eddy snapshot verify DIR...`: checks snapshot version folders the way a replica does before it
 * serves one (eddy_store_verify_each): manifest, sizes, SHA-256, safetensors structure, tensor
 * shapes against the spec, metadata. Reads only; prints every problem found. */
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli/cli.h"
#include "snapshot/store.h"

static const char snapshot_usage[] =
    "usage: eddy snapshot verify DIR... [--json]\n\n"
    "Checks snapshot version folders (<store>/<model>/vNNNNNN) as a replica does before serving one:\n"
    "manifest.json parses and is complete; weights.safetensors and state.safetensors are present with\n"
    "the sizes and SHA-256 the manifest records, and no unlisted files are present; both are valid\n"
    "safetensors files; the weights hold exactly the tensors of the manifest's model spec (names,\n"
    "shapes, the manifest's weights_dtype) and carry eddy.spec, eddy.model and eddy.version metadata\n"
    "equal to the manifest's; the state holds the spec's tensors in F32 with the same spec; a version\n"
    "with status promoted has no NaN/Inf weights. Nothing is written.\n\n"
    "      --json     one JSON object per DIR on stdout: {dir, ok, problems: [{file, error, message}],\n"
    "                 manifest}\n"
    "  -h, --help     this text\n\n"
    "Exit: 0 every DIR verified, 1 a problem found in any DIR (each one is printed), 2 usage error.\n";

typedef struct {
  cJSON *problems; /* [{file, error, message}] */
  size_t n;
} problems_t;

static void on_problem(void *ctx, const char *file, eddy_err_t err, const char *message) {
  problems_t *p = ctx;
  p->n++;
  cJSON *o = cJSON_CreateObject();
  if (!o) return;
  cJSON_AddStringToObject(o, "file", file);
  cJSON_AddStringToObject(o, "error", eddy_err_name(err));
  cJSON_AddStringToObject(o, "message", message);
  cJSON_AddItemToArray(p->problems, o);
}

static int verify_json(const char *dir) {
  cJSON *o = cJSON_CreateObject();
  problems_t p = {0};
  eddy_manifest_t m;
  if (!o) return EDDY_EXIT_FAILURE;
  cJSON_AddStringToObject(o, "dir", dir);
  p.problems = cJSON_CreateArray();
  eddy_err_t err = eddy_store_verify_each(dir, &m, on_problem, &p, NULL);
  cJSON_AddBoolToObject(o, "ok", err == EDDY_OK);
  if (p.problems) cJSON_AddItemToObject(o, "problems", p.problems);
  char *text = NULL;
  cJSON *man = NULL;
  if (m.version && eddy_manifest_to_json(&m, &text, NULL, 0) == EDDY_OK) man = cJSON_Parse(text);
  free(text);
  if (man) cJSON_AddItemToObject(o, "manifest", man);
  else cJSON_AddNullToObject(o, "manifest");
  eddy_manifest_clear(&m);
  text = cJSON_PrintUnformatted(o);
  cJSON_Delete(o);
  if (!text) {
    fprintf(stderr, "eddy snapshot: out of memory\n");
    return EDDY_EXIT_FAILURE;
  }
  printf("%s\n", text);
  free(text);
  return err ? EDDY_EXIT_FAILURE : EDDY_EXIT_OK;
}

static int verify_text(const char *dir) {
  problems_t p = {.problems = cJSON_CreateArray()};
  eddy_manifest_t m;
  if (!p.problems) return EDDY_EXIT_FAILURE;
  eddy_err_t err = eddy_store_verify_each(dir, &m, on_problem, &p, NULL);
  if (err) {
    printf("FAILED %s: %zu problem%s\n", dir, p.n, p.n == 1 ? "" : "s");
    for (const cJSON *e = p.problems->child; e; e = e->next)
      printf("  %s: %s\n", cJSON_GetObjectItem(e, "file")->valuestring, cJSON_GetObjectItem(e, "message")->valuestring);
    fprintf(stderr, "eddy snapshot: %s: %zu problem%s found\n", dir, p.n, p.n == 1 ? "" : "s");
  } else {
    char when[40];
    eddy_manifest_format_time(m.created_at_ms, when, sizeof when);
    printf("OK %s: model %s, version %" PRIu64, dir, m.model, m.version);
    if (m.parent) printf(" (parent %" PRIu64 ")", m.parent);
    else printf(" (no parent)");
    printf(", status %s%s%s, step %" PRIu64 ", examples %" PRIu64 ", created %s\n", eddy_version_status_name(m.status),
           m.reason[0] ? ": " : "", m.reason, m.step, m.examples, when);
    printf("  weights %s, precision %s\n", m.weights_dtype, m.precision);
    for (size_t i = 0; i < m.n_files; i++)
      printf("  %-22s %12" PRIu64 " bytes  sha256 %s\n", m.files[i].name, m.files[i].bytes, m.files[i].sha256);
  }
  cJSON_Delete(p.problems);
  eddy_manifest_clear(&m);
  return err ? EDDY_EXIT_FAILURE : EDDY_EXIT_OK;
}

int eddy_cmd_snapshot(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
    fputs(snapshot_usage, argc < 2 ? stderr : stdout);
    return argc < 2 ? EDDY_EXIT_USAGE : EDDY_EXIT_OK;
  }
  if (strcmp(argv[1], "verify")) {
    fprintf(stderr, "eddy snapshot: unknown subcommand '%s'\n%s", argv[1], snapshot_usage);
    return EDDY_EXIT_USAGE;
  }
  argc--;
  argv++;
  static const struct option opts[] = {
      {"json", no_argument, NULL, 'j'}, EDDY_CLI_OPT_HELP, {NULL, 0, NULL, 0}};
  bool json = false;
  eddy_cli_t cli = {.cmd = "snapshot", .usage = snapshot_usage, .operands = true};
  int c;
  while ((c = eddy_cli_getopt(&cli, argc, argv, "h", opts)) != -1) {
    switch (c) {
      case 'j': json = true; break;
      default: return cli.exit; /* EDDY_CLI_STOP: --help or a usage error, printed */
    }
  }
  if (optind >= argc) {
    fprintf(stderr, "eddy snapshot: verify needs at least one DIR\n%s", snapshot_usage);
    return EDDY_EXIT_USAGE;
  }
  int rc = EDDY_EXIT_OK;
  for (int i = optind; i < argc; i++) {
    if (!argv[i][0]) {
      fprintf(stderr, "eddy snapshot: empty DIR argument\n");
      return EDDY_EXIT_USAGE;
    }
  }
  for (int i = optind; i < argc; i++) {
    int one = json ? verify_json(argv[i]) : verify_text(argv[i]);
    if (one != EDDY_EXIT_OK) rc = one;
  }
  return rc;
}
