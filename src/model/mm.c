/* oneDNN matmul cache (see mm.h). Primitives use a user-managed scratchpad shared by the whole
 * context, so executing a cached primitive allocates nothing. The cache is a small array searched
 * by exact shape; when full, the least recently used entry is replaced. */
#include "model/mm.h"

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MM_CACHE_SIZE 48
#define MM_MAX_SCRATCH ((size_t)1 << 31)

typedef struct {
  eddy_mm_shape_t shape;
  dnnl_primitive_t prim;
  dnnl_memory_t src, wei, bias, dst, scale;
  uint64_t last_used;
  bool used;
} mm_entry_t;

struct eddy_mm {
  dnnl_engine_t engine;
  dnnl_stream_t stream;
  int threads;
  void *scratch;
  size_t scratch_size;
  dnnl_memory_t scratch_mem; /* recreated when the buffer grows */
  mm_entry_t cache[MM_CACHE_SIZE];
  uint64_t clock;
};

static eddy_err_t dnnl_fail(dnnl_status_t st, const char *call, const eddy_mm_shape_t *s, char *errstr,
                            size_t errstr_size) {
  if (s)
    return eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size,
                     "oneDNN %s (matmul %lldx%lldx%lld %s%s%s%s) failed: %s", call, (long long)s->m,
                     (long long)s->k, (long long)s->n, s->type == EDDY_MM_BF16 ? "bf16" : "f32",
                     s->bias ? " +bias" : "", s->relu ? " +relu" : "", s->accumulate ? " +sum" : "",
                     dnnl_status2str(st));
  return eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "oneDNN %s failed: %s", call,
                   dnnl_status2str(st));
}

const char *eddy_mm_isa_name(void) {
  switch ((int)dnnl_get_effective_cpu_isa()) {
  case dnnl_cpu_isa_sse41: return "sse41";
  case dnnl_cpu_isa_avx: return "avx";
  case dnnl_cpu_isa_avx2: return "avx2";
  case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
  case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
  case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
  case dnnl_cpu_isa_avx512_core: return "avx512_core";
  case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
  case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
  case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
  default: return "cpu";
  }
}

eddy_mm_t *eddy_mm_new(int threads, char *errstr, size_t errstr_size) {
  eddy_mm_t *mm = calloc(1, sizeof *mm);
  if (!mm) {
    eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return NULL;
  }
  mm->threads = threads > 0 ? threads : 1;
  eddy_mm_bind_threads(mm);
  dnnl_status_t st = dnnl_engine_create(&mm->engine, dnnl_cpu, 0);
  if (st != dnnl_success) {
    dnnl_fail(st, "dnnl_engine_create(cpu)", NULL, errstr, errstr_size);
    free(mm);
    return NULL;
  }
  st = dnnl_stream_create(&mm->stream, mm->engine, dnnl_stream_default_flags);
  if (st != dnnl_success) {
    dnnl_fail(st, "dnnl_stream_create", NULL, errstr, errstr_size);
    dnnl_engine_destroy(mm->engine);
    free(mm);
    return NULL;
  }
  return mm;
}

static void entry_clear(mm_entry_t *e) {
  if (e->prim) dnnl_primitive_destroy(e->prim);
  dnnl_memory_t *mems[] = {&e->src, &e->wei, &e->bias, &e->dst, &e->scale};
  for (size_t i = 0; i < sizeof mems / sizeof mems[0]; i++)
    if (*mems[i]) dnnl_memory_destroy(*mems[i]);
  memset(e, 0, sizeof *e);
}

void eddy_mm_destroy(eddy_mm_t *mm) {
  if (!mm) return;
  for (size_t i = 0; i < MM_CACHE_SIZE; i++) entry_clear(&mm->cache[i]);
  if (mm->scratch_mem) dnnl_memory_destroy(mm->scratch_mem);
  free(mm->scratch);
  dnnl_stream_destroy(mm->stream);
  dnnl_engine_destroy(mm->engine);
  free(mm);
}

void eddy_mm_bind_threads(const eddy_mm_t *mm) {
  if (omp_get_max_threads() != mm->threads) omp_set_num_threads(mm->threads);
}

static dnnl_status_t md_2d(dnnl_memory_desc_t *md, int64_t d0, int64_t d1, dnnl_data_type_t dt,
                           const int64_t stride[2]) {
  dnnl_dims_t dims = {d0, d1};
  dnnl_dims_t strides = {stride[0], stride[1]};
  return dnnl_memory_desc_init_by_strides(md, 2, dims, dt, strides);
}

/* Creates the primitive descriptor for shape; *pd NULL on failure with st set. */
static dnnl_status_t make_pd(eddy_mm_t *mm, const eddy_mm_shape_t *s, dnnl_primitive_desc_t *pd,
                             const char **call) {
  dnnl_data_type_t op = s->type == EDDY_MM_BF16 ? dnnl_bf16 : dnnl_f32;
  dnnl_memory_desc_t src_md, wei_md, bias_md, dst_md;
  dnnl_status_t st;
  *pd = NULL;
  *call = "dnnl_memory_desc_init_by_strides";
  if ((st = md_2d(&src_md, s->m, s->k, op, s->src_stride)) != dnnl_success) return st;
  if ((st = md_2d(&wei_md, s->k, s->n, op, s->wei_stride)) != dnnl_success) return st;
  if ((st = md_2d(&dst_md, s->m, s->n, dnnl_f32, s->dst_stride)) != dnnl_success) return st;
  if (s->bias) {
    int64_t bstride[2] = {s->n, 1};
    if ((st = md_2d(&bias_md, 1, s->n, dnnl_f32, bstride)) != dnnl_success) return st;
  }
  dnnl_matmul_desc_t desc;
  *call = "dnnl_matmul_desc_init";
  st = dnnl_matmul_desc_init(&desc, &src_md, &wei_md, s->bias ? &bias_md : NULL, &dst_md);
  if (st != dnnl_success) return st;

  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  *call = "dnnl_primitive_attr_create";
  if ((st = dnnl_primitive_attr_create(&attr)) != dnnl_success) return st;
  *call = "dnnl_primitive_attr_set_scratchpad_mode(user)";
  st = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
  if (st == dnnl_success && s->runtime_scale) {
    float rt = DNNL_RUNTIME_F32_VAL;
    *call = "dnnl_primitive_attr_set_output_scales(runtime)";
    st = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &rt);
  }
  if (st == dnnl_success && (s->relu || s->accumulate)) {
    *call = "dnnl_post_ops_create";
    st = dnnl_post_ops_create(&po);
    if (st == dnnl_success && s->accumulate) {
      *call = "dnnl_post_ops_append_sum";
      st = dnnl_post_ops_append_sum(po, 1.0f);
    }
    if (st == dnnl_success && s->relu) {
      *call = "dnnl_post_ops_append_eltwise(relu)";
      st = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f);
    }
    if (st == dnnl_success) {
      *call = "dnnl_primitive_attr_set_post_ops";
      st = dnnl_primitive_attr_set_post_ops(attr, po);
    }
  }
  if (st == dnnl_success) {
    *call = "dnnl_primitive_desc_create";
    st = dnnl_primitive_desc_create(pd, &desc, attr, mm->engine, NULL);
    if (st != dnnl_success) *pd = NULL;
  }
  if (po) dnnl_post_ops_destroy(po);
  dnnl_primitive_attr_destroy(attr);
  return st;
}

bool eddy_mm_probe_bf16(eddy_mm_t *mm, char *impl, size_t impl_size) {
  /* The three kinds the learner runs: forward (bias + ReLU, transposed weights), weight gradient
   * (transposed source, accumulating), data gradient (strided weights). */
  eddy_mm_shape_t kinds[3];
  memset(kinds, 0, sizeof kinds);
  eddy_mm_shape_t *f = &kinds[0], *w = &kinds[1], *x = &kinds[2];
  f->m = 64, f->k = 256, f->n = 128, f->bias = 1, f->relu = 1;
  f->src_stride[0] = 256, f->src_stride[1] = 1, f->wei_stride[0] = 1, f->wei_stride[1] = 256;
  f->dst_stride[0] = 128, f->dst_stride[1] = 1;
  w->m = 128, w->k = 64, w->n = 256, w->accumulate = 1;
  w->src_stride[0] = 1, w->src_stride[1] = 128, w->wei_stride[0] = 256, w->wei_stride[1] = 1;
  w->dst_stride[0] = 256, w->dst_stride[1] = 1;
  x->m = 64, x->k = 128, x->n = 16;
  x->src_stride[0] = 128, x->src_stride[1] = 1, x->wei_stride[0] = 256, x->wei_stride[1] = 1;
  x->dst_stride[0] = 16, x->dst_stride[1] = 1;
  eddy_mm_bind_threads(mm);
  char first[96] = "";
  for (int i = 0; i < 3; i++) {
    kinds[i].type = EDDY_MM_BF16;
    dnnl_primitive_desc_t pd;
    const char *call;
    dnnl_status_t st = make_pd(mm, &kinds[i], &pd, &call);
    if (st != dnnl_success) {
      snprintf(impl, impl_size, "%s: %s", call, dnnl_status2str(st));
      return false;
    }
    const char *name = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) != dnnl_success || !name)
      name = "unknown";
    bool reference = strncmp(name, "ref", 3) == 0;
    if (i == 0) snprintf(first, sizeof first, "%s", name);
    if (reference) /* oneDNN's reference kernels are far slower than fp32 GEMM */
      snprintf(impl, impl_size, "only the reference bf16 matmul (%s)", name);
    dnnl_primitive_desc_destroy(pd);
    if (reference) return false;
  }
  snprintf(impl, impl_size, "%s", first);
  return true;
}

static eddy_err_t ensure_scratch(eddy_mm_t *mm, size_t size, char *errstr, size_t errstr_size) {
  if (size <= mm->scratch_size && mm->scratch_mem) return EDDY_OK;
  if (size > MM_MAX_SCRATCH)
    return eddy_errf(EDDY_ERR_BACKEND, errstr, errstr_size, "oneDNN scratchpad of %zu bytes: too large",
                     size);
  size_t want = size > mm->scratch_size ? size : mm->scratch_size;
  if (want < 4096) want = 4096;
  void *buf = aligned_alloc(64, (want + 63) / 64 * 64);
  if (!buf) return eddy_errf(EDDY_ERR_NOMEM, errstr, errstr_size, "oneDNN scratchpad: out of memory");
  dnnl_memory_desc_t md;
  dnnl_dims_t dims = {(int64_t)want};
  dnnl_status_t st = dnnl_memory_desc_init_by_tag(&md, 1, dims, dnnl_u8, dnnl_a);
  dnnl_memory_t mem = NULL;
  if (st == dnnl_success) st = dnnl_memory_create(&mem, &md, mm->engine, buf);
  if (st != dnnl_success) {
    free(buf);
    return dnnl_fail(st, "dnnl_memory_create(scratchpad)", NULL, errstr, errstr_size);
  }
  if (mm->scratch_mem) dnnl_memory_destroy(mm->scratch_mem);
  free(mm->scratch);
  mm->scratch = buf;
  mm->scratch_mem = mem;
  mm->scratch_size = want;
  return EDDY_OK;
}

static eddy_err_t entry_create(eddy_mm_t *mm, mm_entry_t *e, const eddy_mm_shape_t *s, char *errstr,
                               size_t errstr_size) {
  dnnl_primitive_desc_t pd;
  const char *call;
  dnnl_status_t st = make_pd(mm, s, &pd, &call);
  if (st != dnnl_success) return dnnl_fail(st, call, s, errstr, errstr_size);
  eddy_err_t err = EDDY_OK;
  const dnnl_memory_desc_t *scratch_md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
  size_t scratch = scratch_md ? dnnl_memory_desc_get_size(scratch_md) : 0;
  err = ensure_scratch(mm, scratch, errstr, errstr_size);
  struct {
    dnnl_memory_t *mem;
    int arg;
  } args[] = {{&e->src, DNNL_ARG_SRC},
              {&e->wei, DNNL_ARG_WEIGHTS},
              {&e->dst, DNNL_ARG_DST},
              {&e->bias, DNNL_ARG_BIAS}};
  size_t nargs = s->bias ? 4 : 3;
  for (size_t i = 0; !err && i < nargs; i++) {
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_exec_arg_md, args[i].arg);
    st = md ? dnnl_memory_create(args[i].mem, md, mm->engine, DNNL_MEMORY_NONE) : dnnl_invalid_arguments;
    if (st != dnnl_success) err = dnnl_fail(st, "dnnl_memory_create", s, errstr, errstr_size);
  }
  if (!err && s->runtime_scale) {
    dnnl_memory_desc_t md;
    dnnl_dims_t dims = {1};
    st = dnnl_memory_desc_init_by_tag(&md, 1, dims, dnnl_f32, dnnl_a);
    if (st == dnnl_success) st = dnnl_memory_create(&e->scale, &md, mm->engine, DNNL_MEMORY_ALLOCATE);
    if (st != dnnl_success) err = dnnl_fail(st, "dnnl_memory_create(scale)", s, errstr, errstr_size);
  }
  if (!err) {
    st = dnnl_primitive_create(&e->prim, pd);
    if (st != dnnl_success) err = dnnl_fail(st, "dnnl_primitive_create", s, errstr, errstr_size);
  }
  dnnl_primitive_desc_destroy(pd);
  if (err) {
    entry_clear(e);
    return err;
  }
  e->shape = *s;
  e->used = true;
  return EDDY_OK;
}

static eddy_err_t lookup(eddy_mm_t *mm, const eddy_mm_shape_t *s, mm_entry_t **out, char *errstr,
                         size_t errstr_size) {
  mm_entry_t *victim = &mm->cache[0];
  for (size_t i = 0; i < MM_CACHE_SIZE; i++) {
    mm_entry_t *e = &mm->cache[i];
    if (e->used && !memcmp(&e->shape, s, sizeof *s)) {
      e->last_used = ++mm->clock;
      *out = e;
      return EDDY_OK;
    }
    if (!e->used) {
      if (victim->used) victim = e;
    } else if (victim->used && e->last_used < victim->last_used) {
      victim = e;
    }
  }
  entry_clear(victim);
  eddy_err_t err = entry_create(mm, victim, s, errstr, errstr_size);
  if (err) return err;
  victim->last_used = ++mm->clock;
  *out = victim;
  return EDDY_OK;
}

eddy_err_t eddy_mm_run(eddy_mm_t *mm, const eddy_mm_shape_t *shape, const void *src, const void *wei,
                       const float *bias, float *dst, float scale, char *errstr, size_t errstr_size) {
  eddy_mm_shape_t s;
  memset(&s, 0, sizeof s); /* padding bytes take part in the cache comparison */
  s.m = shape->m, s.k = shape->k, s.n = shape->n, s.type = shape->type;
  memcpy(s.src_stride, shape->src_stride, sizeof s.src_stride);
  memcpy(s.wei_stride, shape->wei_stride, sizeof s.wei_stride);
  memcpy(s.dst_stride, shape->dst_stride, sizeof s.dst_stride);
  s.bias = shape->bias, s.relu = shape->relu, s.accumulate = shape->accumulate;
  s.runtime_scale = shape->runtime_scale;
  mm_entry_t *e;
  eddy_err_t err = lookup(mm, &s, &e, errstr, errstr_size);
  if (err) return err;
  dnnl_status_t st = dnnl_memory_set_data_handle(e->src, (void *)src);
  if (st == dnnl_success) st = dnnl_memory_set_data_handle(e->wei, (void *)wei);
  if (st == dnnl_success) st = dnnl_memory_set_data_handle(e->dst, dst);
  if (st == dnnl_success && s.bias) st = dnnl_memory_set_data_handle(e->bias, (void *)bias);
  if (st != dnnl_success) return dnnl_fail(st, "dnnl_memory_set_data_handle", &s, errstr, errstr_size);
  dnnl_exec_arg_t args[6];
  int nargs = 0;
  args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, e->src};
  args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, e->wei};
  args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, e->dst};
  args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, mm->scratch_mem};
  if (s.bias) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, e->bias};
  if (s.runtime_scale) {
    void *h = NULL;
    st = dnnl_memory_get_data_handle(e->scale, &h);
    if (st != dnnl_success || !h) return dnnl_fail(st, "dnnl_memory_get_data_handle(scale)", &s, errstr, errstr_size);
    *(float *)h = scale;
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_ATTR_OUTPUT_SCALES, e->scale};
  }
  eddy_mm_bind_threads(mm);
  st = dnnl_primitive_execute(e->prim, mm->stream, nargs, args);
  if (st != dnnl_success) return dnnl_fail(st, "dnnl_primitive_execute", &s, errstr, errstr_size);
  return EDDY_OK;
}
