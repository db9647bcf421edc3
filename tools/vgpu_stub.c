/* vgpu_stub.c: a null GPU for a CUDA build of PyTorch on a machine without one.

Built as libcuda.so.1 and loaded with LD_PRELOAD (tools/virtual_gpu.py does both), it stands in for
  - the CUDA driver (libcuda.so.1: torch, Triton and inductor open it by that name),
  - the CUDA runtime entry points torch calls (they take precedence over the real libcudart),
  - the cuBLAS / cuBLASLt entry points torch's matmuls call.
The device it describes is chosen by VGPU_GPU (h100 | 4090 | 5090). Memory is address space only: cudaMalloc reserves
pages that are never touched (PROT_NONE), copies to the device are dropped, copies from it read zeros, and every
kernel launch returns at once. So a program runs with a real allocator, real compiled kernels and real launch
sequences, and every value it computes is garbage. Counters of launches and of the largest shared memory a launch
took (what that kernel was compiled to need) are read through vgpu_counters(); a kernel that asks for more shared
memory than the device has fails its launch set-up with a line naming it, as on the real device. */
#define _GNU_SOURCE
#include <cuda.h>
#include <driver_types.h> /* the runtime's types; cudaDeviceProp's layout must be that of torch's CUDA version */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* ---------------------------------------------------------------- the device */

typedef struct {
  const char *key, *name;
  int major, minor, sms, threads_per_sm, blocks_per_sm, bus_width, clock_khz, mem_clock_khz;
  size_t total_mib, smem_per_block_optin, smem_per_sm, l2_bytes;
} device_t;

/* From NVIDIA's documentation: CUDA C++ Programming Guide, "Technical Specifications per Compute Capability"
   (shared memory per SM / per block opt-in, resident threads and blocks per SM); the H100 Tensor Core GPU
   Architecture whitepaper (H100 SXM5: 132 SMs, 50 MB L2, 5120-bit HBM3) and the Ada GPU Architecture
   whitepaper (RTX 4090: 128 SMs, 72 MB L2, 384-bit GDDR6X) and NVIDIA's RTX 5090 specifications (170 SMs,
   2.41 GHz boost, 96 MB L2, 512-bit GDDR7 at 28 Gbps; compute capability 12.0: 1536 threads and 32 blocks per
   SM, 100 KB shared memory per SM, 99 KB per block). Memory as nvidia-smi reports it (81559 MiB for H100 80GB
   HBM3, as in ../shared/reference's record log; 24564 MiB for the RTX 4090; 32607 MiB for the RTX 5090). */
static const device_t DEVICES[] = {
    {"h100", "NVIDIA H100 80GB HBM3", 9, 0, 132, 2048, 32, 5120, 1980000, 2619000, 81559, 232448, 233472,
     50u << 20},
    {"4090", "NVIDIA GeForce RTX 4090", 8, 9, 128, 1536, 24, 384, 2520000, 10501000, 24564, 101376, 102400,
     72u << 20},
    {"5090", "NVIDIA GeForce RTX 5090", 12, 0, 170, 1536, 32, 512, 2407000, 14001000, 32607, 101376, 102400,
     96u << 20},
};

static const device_t *device(void) {
  static const device_t *chosen;
  if (!chosen) {
    const char *key = getenv("VGPU_GPU");
    chosen = &DEVICES[0];
    for (size_t i = 0; key && i < sizeof DEVICES / sizeof *DEVICES; i++)
      if (!strcmp(key, DEVICES[i].key)) chosen = &DEVICES[i];
  }
  return chosen;
}

static size_t total_memory(void) { return device()->total_mib << 20; }

static int attribute(int attr) {
  const device_t *d = device();
  switch (attr) {
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: return 1024;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: return 64;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: return 2147483647;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: return 65535;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: return 49152;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: return (int)d->smem_per_block_optin;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: return (int)d->smem_per_sm;
    case CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK: return 1024;
    case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: return 65536;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: return 32;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR:
      return 65536;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: return d->clock_khz;
    case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: return d->mem_clock_khz;
    case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: return d->bus_width;
    case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: return (int)d->l2_bytes;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: return d->sms;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: return d->threads_per_sm;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: return d->blocks_per_sm;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: return d->major;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: return d->minor;
    case CU_DEVICE_ATTRIBUTE_INTEGRATED: case CU_DEVICE_ATTRIBUTE_TCC_DRIVER: return 0;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_MODE: return 0;
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID:
      return 0;
    case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: return 2;
    case CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH: return d->major >= 9;
    case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: return 0;  /* no cudaMallocAsync pools here */
    case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: return 1;  /* expandable segments */
    default: return 1;  /* the boolean capabilities: unified addressing, concurrent kernels, ... */
  }
}

/* ---------------------------------------------------------------- counters */

static long long n_kernel_launches, n_triton_launches, n_blas_calls, n_copies, max_smem_request, blas_flops;
static char max_smem_kernel[256];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

/* out: aten/runtime kernel launches, driver (Triton) launches, cuBLAS/cuBLASLt matmuls, memcpys, the largest
   dynamic shared memory a launch took in bytes, the FLOPs of the cuBLAS matmuls. name: the kernel of that launch. */
void vgpu_counters(long long out[6], char *name, size_t name_len) {
  pthread_mutex_lock(&lock);
  out[0] = n_kernel_launches; out[1] = n_triton_launches; out[2] = n_blas_calls; out[3] = n_copies;
  out[4] = max_smem_request; out[5] = blas_flops;
  if (name) snprintf(name, name_len, "%s", max_smem_kernel);
  pthread_mutex_unlock(&lock);
}

#define COUNT(var) __atomic_add_fetch(&var, 1, __ATOMIC_RELAXED)

/* every error this device returns, on stderr when VGPU_DEBUG is set */
static int refuse(int code, const char *what) {
  if (getenv("VGPU_DEBUG")) fprintf(stderr, "vgpu: %s -> error %d\n", what, code);
  return code;
}

/* ---------------------------------------------------------------- memory: address space only */

typedef struct { uintptr_t ptr; size_t size; int host; } region_t;
static region_t *regions;
static size_t n_regions, cap_regions, device_bytes;

static void remember(void *ptr, size_t size, int host) {
  pthread_mutex_lock(&lock);
  if (n_regions == cap_regions) {
    cap_regions = cap_regions ? 2 * cap_regions : 1024;
    regions = realloc(regions, cap_regions * sizeof *regions);
  }
  regions[n_regions++] = (region_t){(uintptr_t)ptr, size, host};
  if (!host) device_bytes += size;
  pthread_mutex_unlock(&lock);
}

static region_t forget(void *ptr) {  /* -> the region, or size 0 if ptr was not ours */
  region_t found = {0, 0, 0};
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < n_regions; i++)
    if (regions[i].ptr == (uintptr_t)ptr) {
      found = regions[i];
      regions[i] = regions[--n_regions];
      if (!found.host) device_bytes -= found.size;
      break;
    }
  pthread_mutex_unlock(&lock);
  return found;
}

static int kind_of(const void *ptr) {  /* 0 unknown (pageable host), 1 pinned host, 2 device */
  int kind = 0;
  pthread_mutex_lock(&lock);
  for (size_t i = 0; i < n_regions; i++)
    if ((uintptr_t)ptr >= regions[i].ptr && (uintptr_t)ptr < regions[i].ptr + regions[i].size) {
      kind = regions[i].host ? 1 : 2;
      break;
    }
  pthread_mutex_unlock(&lock);
  return kind;
}

static cudaError_t device_alloc(void **ptr, size_t size) {
  if (size == 0) { *ptr = NULL; return 0; }
  if (device_bytes + size > total_memory()) return refuse(cudaErrorMemoryAllocation, "cudaMalloc: the card is full");
  void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return refuse(cudaErrorMemoryAllocation, "cudaMalloc: no address space");
  remember(p, size, 0);
  *ptr = p;
  return 0;
}

static cudaError_t device_free(void *ptr) {
  region_t r = forget(ptr);
  if (r.size && !r.host) munmap(ptr, r.size);
  return 0;
}

/* kinds as in cudaMemcpyKind: 0 H2H, 1 H2D, 2 D2H, 3 D2D, 4 default (inferred from the pointers) */
static cudaError_t copy(void *dst, const void *src, size_t count, int kind) {
  COUNT(n_copies);
  if (kind == 4) kind = (kind_of(src) == 2) * 2 + (kind_of(dst) == 2);
  if (kind == 0) memmove(dst, src, count);
  else if (kind == 2) memset(dst, 0, count);  /* the device holds no values: read zeros */
  return 0;
}

/* ---------------------------------------------------------------- CUDA runtime */

static int current_device;
static uintptr_t next_handle = 0x1000;
static void *new_handle(void) { return (void *)__atomic_add_fetch(&next_handle, 16, __ATOMIC_RELAXED); }

cudaError_t cudaGetDeviceCount(int *count) { *count = 1; return 0; }
cudaError_t cudaGetDevice(int *dev) { *dev = current_device; return 0; }
cudaError_t cudaSetDevice(int dev) { return dev == 0 ? 0 : refuse(cudaErrorInvalidDevice, "cudaSetDevice"); }
cudaError_t cudaInitDevice(int dev, unsigned a, unsigned b) { return cudaSetDevice(dev); }
cudaError_t cudaSetDeviceFlags(unsigned flags) { return 0; }
cudaError_t cudaGetDeviceFlags(unsigned *flags) { *flags = 0; return 0; }
cudaError_t cudaDeviceSynchronize(void) { return 0; }
cudaError_t cudaDeviceReset(void) { return 0; }
cudaError_t cudaDriverGetVersion(int *v) { *v = CUDA_VERSION; return 0; }
cudaError_t cudaRuntimeGetVersion(int *v) { *v = CUDA_VERSION; return 0; }
cudaError_t cudaGetLastError(void) { return 0; }
cudaError_t cudaPeekAtLastError(void) { return 0; }
const char *cudaGetErrorString(cudaError_t e) { return e ? "error from the virtual GPU (tools/vgpu_stub.c)" : "no error"; }
const char *cudaGetErrorName(cudaError_t e) { return e ? "cudaErrorVirtualGPU" : "cudaSuccess"; }
cudaError_t cudaDeviceGetAttribute(int *value, int attr, int dev) { *value = attribute(attr); return 0; }
cudaError_t cudaDeviceGetLimit(size_t *value, int limit) { *value = 1024; return 0; }
cudaError_t cudaDeviceSetLimit(int limit, size_t value) { return 0; }
cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest) { *least = 0; *greatest = -5; return 0; }
cudaError_t cudaDeviceCanAccessPeer(int *can, int dev, int peer) { *can = 0; return 0; }
cudaError_t cudaDeviceEnablePeerAccess(int peer, unsigned flags) { return 0; }
cudaError_t cudaDeviceGetPCIBusId(char *id, int len, int dev) { snprintf(id, len, "00000000:00:00.0"); return 0; }

static void fill_properties(struct cudaDeviceProp *p) {
  const device_t *d = device();
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "%s", d->name);
  p->totalGlobalMem = total_memory();
  p->sharedMemPerBlock = 49152;
  p->sharedMemPerBlockOptin = d->smem_per_block_optin;
  p->sharedMemPerMultiprocessor = d->smem_per_sm;
  p->reservedSharedMemPerBlock = 1024;
  p->regsPerBlock = p->regsPerMultiprocessor = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024; p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647; p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->totalConstMem = 65536;
  p->major = d->major; p->minor = d->minor;
  p->multiProcessorCount = d->sms;
  p->maxThreadsPerMultiProcessor = d->threads_per_sm;
  p->maxBlocksPerMultiProcessor = d->blocks_per_sm;
  p->l2CacheSize = (int)d->l2_bytes;
  p->memoryBusWidth = d->bus_width;
  p->concurrentKernels = p->unifiedAddressing = p->canMapHostMemory = p->streamPrioritiesSupported = 1;
  p->asyncEngineCount = 2;
  p->cooperativeLaunch = 1;
  p->clusterLaunch = d->major >= 9;
  p->textureAlignment = 512;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int dev) { fill_properties(p); return 0; }
cudaError_t cudaGetDeviceProperties_v2(struct cudaDeviceProp *p, int dev) { fill_properties(p); return 0; }

cudaError_t cudaStreamCreate(void **s) { *s = new_handle(); return 0; }
cudaError_t cudaStreamCreateWithFlags(void **s, unsigned f) { *s = new_handle(); return 0; }
cudaError_t cudaStreamCreateWithPriority(void **s, unsigned f, int p) { *s = new_handle(); return 0; }
cudaError_t cudaStreamDestroy(void *s) { return 0; }
cudaError_t cudaStreamQuery(void *s) { return 0; }
cudaError_t cudaStreamSynchronize(void *s) { return 0; }
cudaError_t cudaStreamWaitEvent(void *s, void *e, unsigned f) { return 0; }
cudaError_t cudaStreamGetPriority(void *s, int *p) { *p = 0; return 0; }
cudaError_t cudaStreamIsCapturing(void *s, int *status) { *status = 0; return 0; }
cudaError_t cudaStreamGetCaptureInfo(void *s, int *status, unsigned long long *id, void *graph, void *deps,
                                     void *edges, size_t *n) {
  *status = 0;
  if (id) *id = 0;
  if (n) *n = 0;
  return 0;
}
cudaError_t cudaThreadExchangeStreamCaptureMode(int *mode) { return 0; }
cudaError_t cudaStreamAddCallback(void *s, void (*cb)(void *, cudaError_t, void *), void *data, unsigned f) {
  cb(s, 0, data);  /* the stream is always idle */
  return 0;
}
cudaError_t cudaLaunchHostFunc(void *s, void (*fn)(void *), void *data) { fn(data); return 0; }

cudaError_t cudaEventCreate(void **e) { *e = new_handle(); return 0; }
cudaError_t cudaEventCreateWithFlags(void **e, unsigned f) { *e = new_handle(); return 0; }
cudaError_t cudaEventDestroy(void *e) { return 0; }
cudaError_t cudaEventRecord(void *e, void *s) { return 0; }
cudaError_t cudaEventRecordWithFlags(void *e, void *s, unsigned f) { return 0; }
cudaError_t cudaEventQuery(void *e) { return 0; }
cudaError_t cudaEventSynchronize(void *e) { return 0; }
/* benchmarking code divides by elapsed times: every interval takes 1 ms on this device */
cudaError_t cudaEventElapsedTime(float *ms, void *a, void *b) { *ms = 1.0f; return 0; }

cudaError_t cudaMalloc(void **ptr, size_t size) { return device_alloc(ptr, size); }
cudaError_t cudaMallocAsync(void **ptr, size_t size, void *s) { return device_alloc(ptr, size); }
cudaError_t cudaFree(void *ptr) { return ptr ? device_free(ptr) : 0; }
cudaError_t cudaFreeAsync(void *ptr, void *s) { return ptr ? device_free(ptr) : 0; }
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total) {
  *total = total_memory();
  *free_bytes = *total - device_bytes;
  return 0;
}
cudaError_t cudaHostAlloc(void **ptr, size_t size, unsigned flags) {
  if (posix_memalign(ptr, 4096, size ? size : 1)) return cudaErrorMemoryAllocation;
  remember(*ptr, size, 1);
  return 0;
}
cudaError_t cudaMallocHost(void **ptr, size_t size) { return cudaHostAlloc(ptr, size, 0); }
cudaError_t cudaFreeHost(void *ptr) { forget(ptr); free(ptr); return 0; }
cudaError_t cudaHostRegister(void *ptr, size_t size, unsigned flags) { remember(ptr, size, 1); return 0; }
cudaError_t cudaHostUnregister(void *ptr) { forget(ptr); return 0; }
cudaError_t cudaHostGetDevicePointer(void **dev, void *host, unsigned flags) { *dev = host; return 0; }

struct pointer_attributes { int type, device; void *device_pointer, *host_pointer; };  /* cudaPointerAttributes */
cudaError_t cudaPointerGetAttributes(struct pointer_attributes *a, const void *ptr) {
  int kind = kind_of(ptr);  /* cudaMemoryType: 0 unregistered, 1 host, 2 device */
  a->type = kind;
  a->device = 0;
  a->device_pointer = kind ? (void *)ptr : NULL;
  a->host_pointer = kind == 1 ? (void *)ptr : NULL;
  return 0;
}

cudaError_t cudaMemcpy(void *d, const void *s, size_t n, int kind) { return copy(d, s, n, kind); }
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, int kind, void *st) { return copy(d, s, n, kind); }
cudaError_t cudaMemcpyPeerAsync(void *d, int dd, const void *s, int sd, size_t n, void *st) { return 0; }
cudaError_t cudaMemcpy2DAsync(void *d, size_t dp, const void *s, size_t sp, size_t w, size_t h, int kind, void *st) {
  COUNT(n_copies);
  return 0;
}
cudaError_t cudaMemset(void *d, int v, size_t n) { return 0; }
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, void *s) { return 0; }
cudaError_t cudaMemcpyToSymbol(const void *sym, const void *src, size_t n, size_t off, int kind) { return 0; }
cudaError_t cudaGetSymbolAddress(void **dev, const void *sym) { return device_alloc(dev, 65536); }

struct func_attributes {  /* cudaFuncAttributes */
  size_t sharedSizeBytes, constSizeBytes, localSizeBytes;
  int maxThreadsPerBlock, numRegs, ptxVersion, binaryVersion, cacheModeCA, maxDynamicSharedSizeBytes;
  int preferredShmemCarveout, clusterDimMustBeSet, requiredClusterWidth, requiredClusterHeight;
  int requiredClusterDepth, clusterSchedulingPolicyPreference, nonPortableClusterSizeAllowed, reserved[16];
};
/* The architecture of the code the driver would load for a kernel: the newest one the library was built for that
   the device can run (sm_86 code on an sm_89 4090). CUB picks its tuning from it and fails on one it lacks.
   tools/virtual_gpu.py sets VGPU_KERNEL_ARCH from torch's arch list; without it, the device's own. */
static int kernel_arch(void) {
  const char *arch = getenv("VGPU_KERNEL_ARCH");
  return arch ? atoi(arch) : device()->major * 10 + device()->minor;
}
cudaError_t cudaFuncGetAttributes(struct func_attributes *a, const void *fn) {
  memset(a, 0, sizeof *a);
  a->maxThreadsPerBlock = 1024;
  a->numRegs = 32;
  a->ptxVersion = a->binaryVersion = kernel_arch();
  a->maxDynamicSharedSizeBytes = 49152;
  return 0;
}
cudaError_t cudaFuncSetAttribute(const void *fn, int attr, int value) { return 0; }
cudaError_t cudaFuncSetCacheConfig(const void *fn, int config) { return 0; }
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, const void *fn, int block, size_t smem) {
  *n = block > 0 ? device()->threads_per_sm / block : 1;
  if (*n < 1) *n = 1;
  return 0;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *n, const void *fn, int block, size_t smem,
                                                                   unsigned flags) {
  return cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, fn, block, smem);
}

/* kernel launches from nvcc-compiled code (aten): `<<<...>>>` becomes push configuration, get kernel, launch */
typedef struct { unsigned x, y, z; } dim3_t;
unsigned __cudaPushCallConfiguration(dim3_t grid, dim3_t block, size_t smem, void *stream) { return 0; }
cudaError_t __cudaPopCallConfiguration(dim3_t *grid, dim3_t *block, size_t *smem, void **stream) {
  *grid = *block = (dim3_t){1, 1, 1};
  *smem = 0;
  *stream = NULL;
  return 0;
}
cudaError_t __cudaGetKernel(void **kernel, const void *entry) { *kernel = (void *)entry; return 0; }
cudaError_t __cudaLaunchKernel(void) { COUNT(n_kernel_launches); return 0; }
cudaError_t __cudaLaunchKernel_ptsz(void) { COUNT(n_kernel_launches); return 0; }
cudaError_t cudaLaunchKernel(void) { COUNT(n_kernel_launches); return 0; }
cudaError_t cudaLaunchKernelExC(void) { COUNT(n_kernel_launches); return 0; }
cudaError_t cudaLaunchCooperativeKernel(void) { COUNT(n_kernel_launches); return 0; }

static CUresult unsupported(void) { return refuse(CUDA_ERROR_NOT_SUPPORTED, "a driver function without a stand-in"); }

/* c10 and the runtime fetch driver functions by name: ours where we have one, else one that says "not supported" */
static void *driver_symbol(const char *name) {
  void *self = dlopen(NULL, RTLD_NOW);
  char versioned[256];
  void *fn = NULL;
  for (int v = 4; v >= 2 && !fn; v--) {  /* cuMemGetInfo -> cuMemGetInfo_v2 and the like */
    snprintf(versioned, sizeof versioned, "%s_v%d", name, v);
    fn = dlsym(self, versioned);
  }
  if (!fn) fn = dlsym(self, name);
  return fn ? fn : (void *)unsupported;
}
cudaError_t cudaGetDriverEntryPointByVersion(const char *name, void **fn, unsigned version, unsigned long long flags,
                                             int *status) {
  *fn = driver_symbol(name);
  if (status) *status = 0;
  return 0;
}
cudaError_t cudaGetDriverEntryPoint(const char *name, void **fn, unsigned long long flags, int *status) {
  return cudaGetDriverEntryPointByVersion(name, fn, CUDA_VERSION, flags, status);
}

/* ---------------------------------------------------------------- CUDA driver */

static CUcontext the_context = (CUcontext)0xc0;

CUresult cuInit(unsigned flags) { return CUDA_SUCCESS; }
CUresult cuDriverGetVersion(int *v) { *v = CUDA_VERSION; return CUDA_SUCCESS; }
CUresult cuDeviceGet(CUdevice *d, int ordinal) {
  *d = 0;
  return ordinal == 0 ? CUDA_SUCCESS : refuse(CUDA_ERROR_INVALID_DEVICE, "cuDeviceGet");
}
CUresult cuDeviceGetCount(int *count) { *count = 1; return CUDA_SUCCESS; }
CUresult cuDeviceGetName(char *name, int len, CUdevice d) { snprintf(name, len, "%s", device()->name); return CUDA_SUCCESS; }
CUresult cuDeviceTotalMem(size_t *bytes, CUdevice d) { *bytes = total_memory(); return CUDA_SUCCESS; }
CUresult cuDeviceGetAttribute(int *value, CUdevice_attribute attr, CUdevice d) {
  *value = attribute(attr);
  return CUDA_SUCCESS;
}
CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice d) { memset(uuid, 0x5a, sizeof *uuid); return CUDA_SUCCESS; }
CUresult cuDevicePrimaryCtxGetState(CUdevice d, unsigned *flags, int *active) {
  *flags = 0;
  *active = 1;
  return CUDA_SUCCESS;
}
CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice d) { *ctx = the_context; return CUDA_SUCCESS; }
CUresult cuDevicePrimaryCtxRelease(CUdevice d) { return CUDA_SUCCESS; }
CUresult cuCtxGetCurrent(CUcontext *ctx) { *ctx = the_context; return CUDA_SUCCESS; }
CUresult cuCtxSetCurrent(CUcontext ctx) { return CUDA_SUCCESS; }
CUresult cuCtxPushCurrent(CUcontext ctx) { return CUDA_SUCCESS; }
CUresult cuCtxPopCurrent(CUcontext *ctx) { if (ctx) *ctx = the_context; return CUDA_SUCCESS; }
CUresult cuCtxGetDevice(CUdevice *d) { *d = 0; return CUDA_SUCCESS; }
CUresult cuCtxSynchronize(void) { return CUDA_SUCCESS; }
CUresult cuCtxGetLimit(size_t *value, CUlimit limit) { *value = 1024; return CUDA_SUCCESS; }
CUresult cuCtxSetLimit(CUlimit limit, size_t value) { return CUDA_SUCCESS; }
CUresult cuGetErrorString(CUresult e, const char **s) { *s = cudaGetErrorString(e); return CUDA_SUCCESS; }
CUresult cuGetErrorName(CUresult e, const char **s) { *s = cudaGetErrorName(e); return CUDA_SUCCESS; }
CUresult cuGetProcAddress(const char *name, void **fn, int version, cuuint64_t flags,
                          CUdriverProcAddressQueryResult *status) {
  *fn = driver_symbol(name);
  if (status) *status = CU_GET_PROC_ADDRESS_SUCCESS;
  return CUDA_SUCCESS;
}

/* NVRTC (torch.cuda._compile_kernel) asks the driver for an internal table (undocumented): there is none here, and
   it goes on without one, as where no driver is installed */
CUresult cuGetExportTable(const void **table, const CUuuid *id) {
  *table = NULL;
  return CUDA_ERROR_NOT_SUPPORTED;
}

/* modules and functions: a loaded module is a handle; a function remembers its name for messages */
typedef struct { char name[256]; int max_dynamic_smem; } function_t;
CUresult cuModuleLoadData(CUmodule *m, const void *image) { *m = new_handle(); return CUDA_SUCCESS; }
CUresult cuModuleLoadDataEx(CUmodule *m, const void *image, unsigned n, CUjit_option *o, void **v) {
  *m = new_handle();
  return CUDA_SUCCESS;
}
CUresult cuModuleLoad(CUmodule *m, const char *path) { *m = new_handle(); return CUDA_SUCCESS; }
CUresult cuModuleUnload(CUmodule m) { return CUDA_SUCCESS; }
CUresult cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name) {
  function_t *fn = calloc(1, sizeof *fn);
  snprintf(fn->name, sizeof fn->name, "%s", name);
  fn->max_dynamic_smem = 49152;
  *f = (CUfunction)fn;
  return CUDA_SUCCESS;
}
CUresult cuFuncGetAttribute(int *value, CUfunction_attribute attr, CUfunction f) {
  switch (attr) {
    case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = 1024; break;
    case CU_FUNC_ATTRIBUTE_NUM_REGS: *value = 32; break;
    case CU_FUNC_ATTRIBUTE_PTX_VERSION: case CU_FUNC_ATTRIBUTE_BINARY_VERSION:
      *value = device()->major * 10 + device()->minor; break;
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *value = ((function_t *)f)->max_dynamic_smem; break;
    default: *value = 0;
  }
  return CUDA_SUCCESS;
}

static CUresult check_shared_memory(CUfunction f, long long bytes) {
  const char *name = f ? ((function_t *)f)->name : "?";
  if (bytes <= (long long)device()->smem_per_block_optin) return CUDA_SUCCESS;
  fprintf(stderr, "vgpu: kernel %s asks for %lld bytes of shared memory; the %s has %zu per block\n", name, bytes,
          device()->name, device()->smem_per_block_optin);
  return CUDA_ERROR_INVALID_VALUE;
}

CUresult cuFuncSetAttribute(CUfunction f, CUfunction_attribute attr, int value) {
  if (attr != CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES) return CUDA_SUCCESS;
  CUresult r = check_shared_memory(f, value);
  if (r == CUDA_SUCCESS) ((function_t *)f)->max_dynamic_smem = value;
  return r;
}
CUresult cuFuncSetCacheConfig(CUfunction f, CUfunc_cache config) { return CUDA_SUCCESS; }

/* The largest dynamic shared memory a launch takes: what the kernel needs (Triton's launchers pass the compiled
   kernel's metadata.shared). Not cuFuncSetAttribute's value: Triton's loader sets the device's opt-in limit there
   for every kernel over 48 KB. */
static CUresult launch(CUfunction f, unsigned threads, unsigned smem) {
  COUNT(n_triton_launches);
  pthread_mutex_lock(&lock);
  if (smem > max_smem_request) {
    max_smem_request = smem;
    snprintf(max_smem_kernel, sizeof max_smem_kernel, "%s", ((function_t *)f)->name);
  }
  pthread_mutex_unlock(&lock);
  if (threads > 1024) {
    fprintf(stderr, "vgpu: kernel %s launched with %u threads per block (max 1024)\n", ((function_t *)f)->name, threads);
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (smem > 49152 && (int)smem > ((function_t *)f)->max_dynamic_smem) return check_shared_memory(f, smem);
  return CUDA_SUCCESS;
}
CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned smem, CUstream s, void **params, void **extra) {
  return launch(f, bx * by * bz, smem);
}
CUresult cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra) {
  return launch(f, c->blockDimX * c->blockDimY * c->blockDimZ, c->sharedMemBytes);
}
CUresult cuLaunchCooperativeKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                   unsigned bz, unsigned smem, CUstream s, void **params) {
  return launch(f, bx * by * bz, smem);
}
CUresult cuOccupancyMaxActiveBlocksPerMultiprocessor(int *n, CUfunction f, int block, size_t smem) {
  return (CUresult)cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, f, block, smem);
}
CUresult cuOccupancyMaxActiveClusters(int *n, CUfunction f, const CUlaunchConfig *c) { *n = 1; return CUDA_SUCCESS; }
CUresult cuPointerGetAttribute(void *data, CUpointer_attribute attr, CUdeviceptr ptr) {
  switch (attr) {
    case CU_POINTER_ATTRIBUTE_CONTEXT: *(CUcontext *)data = the_context; break;
    case CU_POINTER_ATTRIBUTE_MEMORY_TYPE: *(unsigned *)data = CU_MEMORYTYPE_DEVICE; break;
    case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: *(CUdeviceptr *)data = ptr; break;
    case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: *(int *)data = 0; break;
    default: return refuse(CUDA_ERROR_NOT_SUPPORTED, "cuPointerGetAttribute");
  }
  return CUDA_SUCCESS;
}
CUresult cuPointerGetAttributes(unsigned n, CUpointer_attribute *attrs, void **data, CUdeviceptr ptr) {
  for (unsigned i = 0; i < n; i++) cuPointerGetAttribute(data[i], attrs[i], ptr);
  return CUDA_SUCCESS;
}
CUresult cuTensorMapEncodeTiled(CUtensorMap *map, CUtensorMapDataType t, cuuint32_t rank, void *addr,
                                const cuuint64_t *dims, const cuuint64_t *strides, const cuuint32_t *box,
                                const cuuint32_t *elem_strides, CUtensorMapInterleave i, CUtensorMapSwizzle s,
                                CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob) {
  memset(map, 0, sizeof *map);
  return CUDA_SUCCESS;
}
CUresult cuMemAlloc(CUdeviceptr *ptr, size_t size) { return device_alloc((void **)ptr, size) ? CUDA_ERROR_OUT_OF_MEMORY : 0; }
CUresult cuMemFree(CUdeviceptr ptr) { device_free((void *)ptr); return CUDA_SUCCESS; }
CUresult cuMemGetInfo(size_t *free_bytes, size_t *total) { cudaMemGetInfo(free_bytes, total); return CUDA_SUCCESS; }
CUresult cuStreamSynchronize(CUstream s) { return CUDA_SUCCESS; }

/* virtual memory management, for the caching allocator's expandable segments: address ranges are reserved
   address space, physical allocations only count against the card's memory */
CUresult cuMemGetAllocationGranularity(size_t *granularity, const CUmemAllocationProp *prop,
                                       CUmemAllocationGranularity_flags option) {
  *granularity = 2u << 20;
  return CUDA_SUCCESS;
}
CUresult cuMemAddressReserve(CUdeviceptr *ptr, size_t size, size_t alignment, CUdeviceptr addr,
                             unsigned long long flags) {
  void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return refuse(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAddressReserve: no address space");
  *ptr = (CUdeviceptr)p;
  return CUDA_SUCCESS;
}
CUresult cuMemAddressFree(CUdeviceptr ptr, size_t size) { munmap((void *)ptr, size); return CUDA_SUCCESS; }
CUresult cuMemCreate(CUmemGenericAllocationHandle *handle, size_t size, const CUmemAllocationProp *prop,
                     unsigned long long flags) {
  pthread_mutex_lock(&lock);
  int full = device_bytes + size > total_memory();
  if (!full) device_bytes += size;
  pthread_mutex_unlock(&lock);
  if (full) return refuse(CUDA_ERROR_OUT_OF_MEMORY, "cuMemCreate: the card is full");
  *handle = (CUmemGenericAllocationHandle)size;  /* the handle is the size: all cuMemRelease needs */
  return CUDA_SUCCESS;
}
CUresult cuMemRelease(CUmemGenericAllocationHandle handle) {
  pthread_mutex_lock(&lock);
  device_bytes -= (size_t)handle;
  pthread_mutex_unlock(&lock);
  return CUDA_SUCCESS;
}
CUresult cuMemMap(CUdeviceptr ptr, size_t size, size_t offset, CUmemGenericAllocationHandle h,
                  unsigned long long flags) {
  return CUDA_SUCCESS;
}
CUresult cuMemUnmap(CUdeviceptr ptr, size_t size) { return CUDA_SUCCESS; }
CUresult cuMemSetAccess(CUdeviceptr ptr, size_t size, const CUmemAccessDesc *desc, size_t count) {
  return CUDA_SUCCESS;
}

/* ---------------------------------------------------------------- cuBLAS and cuBLASLt */

typedef int blas_status;
blas_status cublasCreate_v2(void **h) { *h = new_handle(); return 0; }
blas_status cublasDestroy_v2(void *h) { return 0; }
blas_status cublasSetStream_v2(void *h, void *s) { return 0; }
blas_status cublasGetStream_v2(void *h, void **s) { *s = NULL; return 0; }
blas_status cublasSetWorkspace_v2(void *h, void *w, size_t n) { return 0; }
blas_status cublasSetMathMode(void *h, int mode) { return 0; }
blas_status cublasGetMathMode(void *h, int *mode) { *mode = 0; return 0; }
blas_status cublasSetPointerMode_v2(void *h, int mode) { return 0; }
blas_status cublasGetPointerMode_v2(void *h, int *mode) { *mode = 0; return 0; }
/* matmuls count 2 m n k FLOPs each (per batch member); the rest of their arguments are not read */
static blas_status matmul(long long m, long long n, long long k, long long batch) {
  COUNT(n_blas_calls);
  __atomic_add_fetch(&blas_flops, 2 * m * n * k * batch, __ATOMIC_RELAXED);
  return 0;
}
blas_status cublasGemmEx(void *h, int ta, int tb, int m, int n, int k) { return matmul(m, n, k, 1); }
blas_status cublasSgemm_v2(void *h, int ta, int tb, int m, int n, int k) { return matmul(m, n, k, 1); }
blas_status cublasSgemmEx(void *h, int ta, int tb, int m, int n, int k) { return matmul(m, n, k, 1); }
blas_status cublasDgemm_v2(void *h, int ta, int tb, int m, int n, int k) { return matmul(m, n, k, 1); }
blas_status cublasGemmStridedBatchedEx(void *h, int ta, int tb, int m, int n, int k, const void *alpha, const void *a,
                                       int at, int lda, long long sa, const void *b, int bt, int ldb, long long sb,
                                       const void *beta, void *c, int ct, int ldc, long long sc, int batch) {
  return matmul(m, n, k, batch);
}
blas_status cublasSgemmStridedBatched(void *h, int ta, int tb, int m, int n, int k, const void *alpha, const void *a,
                                      int lda, long long sa, const void *b, int ldb, long long sb, const void *beta,
                                      void *c, int ldc, long long sc, int batch) {
  return matmul(m, n, k, batch);
}
blas_status cublasDgemmStridedBatched(void *h, int ta, int tb, int m, int n, int k, const void *alpha, const void *a,
                                      int lda, long long sa, const void *b, int ldb, long long sb, const void *beta,
                                      void *c, int ldc, long long sc, int batch) {
  return matmul(m, n, k, batch);
}
#define VECTOR_OP(name) blas_status name(void) { COUNT(n_blas_calls); return 0; }
VECTOR_OP(cublasGemmBatchedEx) VECTOR_OP(cublasSgemv_v2) VECTOR_OP(cublasDgemv_v2) VECTOR_OP(cublasSdot_v2)
VECTOR_OP(cublasDdot_v2) VECTOR_OP(cublasDotEx)

/* cuBLASLt: a layout remembers its shape, a matmul reads m, n from D's and k from A's */
typedef struct { long long rows, cols, batch; } layout_t;
blas_status cublasLtMatmul(void *h, void *desc, const void *alpha, const void *a, layout_t *la, const void *b,
                           layout_t *lb, const void *beta, const void *c, layout_t *lc, void *d, layout_t *ld) {
  return matmul(ld->rows, ld->cols, la->rows * la->cols / (ld->rows ? ld->rows : 1), ld->batch);
}
size_t cublasLtGetVersion(void) { return 130100; }
blas_status cublasLtCreate(void **h) { *h = new_handle(); return 0; }
blas_status cublasLtDestroy(void *h) { return 0; }
blas_status cublasLtMatmulDescCreate(void **d, int compute, int scale) { *d = new_handle(); return 0; }
blas_status cublasLtMatmulDescDestroy(void *d) { return 0; }
blas_status cublasLtMatmulDescSetAttribute(void *d, int attr, const void *buf, size_t n) { return 0; }
blas_status cublasLtMatrixLayoutCreate(layout_t **l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
  *l = malloc(sizeof **l);
  **l = (layout_t){(long long)rows, (long long)cols, 1};
  return 0;
}
blas_status cublasLtMatrixLayoutDestroy(layout_t *l) { free(l); return 0; }
blas_status cublasLtMatrixLayoutSetAttribute(layout_t *l, int attr, const void *buf, size_t n) {
  if (attr == 5 /* CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT */) l->batch = *(const int32_t *)buf;
  return 0;
}
blas_status cublasLtMatmulPreferenceCreate(void **p) { *p = new_handle(); return 0; }
blas_status cublasLtMatmulPreferenceDestroy(void *p) { return 0; }
blas_status cublasLtMatmulPreferenceSetAttribute(void *p, int attr, const void *buf, size_t n) { return 0; }
struct heuristic_result { uint64_t algo[8]; size_t workspace; int state; float waves; int reserved[4]; };
blas_status cublasLtMatmulAlgoGetHeuristic(void *h, void *d, void *a, void *b, void *c, void *dd, void *pref,
                                           int requested, struct heuristic_result *results, int *count) {
  memset(results, 0, sizeof *results);
  results->waves = 1.0f;
  *count = 1;
  return 0;
}
