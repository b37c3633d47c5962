//! The WebAssembly runtime: one shared [`Runtime`] (wasmtime `Engine` with epoch interruption
//! and a ticker thread, one `Linker`), plugins compiled once and pre-instantiated
//! ([`Plugin`]), and a fresh `Store` with a memory limit and a wall-clock deadline for every
//! (task, worker) run.
//!
//! Sandbox: a guest gets WASI p2 with no preopened directories, no sockets, no name lookup,
//! no environment, no arguments and closed stdin; its stdout is discarded and its stderr kept
//! (capped) for error reports. The worker is reachable only through the `host` interface
//! ([`host`]), whose calls each have their own timeout.

mod bindings;
mod cache;
mod convert;
mod host;
mod plugin;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use bindings::WIT_VERSION;
pub use cache::{CompileCache, CompileStats};
pub use plugin::Plugin;

use crate::error::RunError;
use crate::grants::{Declared, RunPolicy};
use crate::metrics::Metrics;
use crate::task::RunOutcome;
use crate::workers::Worker;

/// How often the epoch advances. A busy guest yields to tokio at every tick, and a deadline
/// is noticed within one tick.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Extra time after a run's deadline before the whole run future is dropped. Covers a guest
/// blocked inside a host call, which epochs cannot interrupt.
const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// Guest stderr kept per run, for error reports (panic messages).
const GUEST_STDERR_CAP_BYTES: usize = 16 << 10;

/// Budget for `describe` and `validate-config`, which must not touch workers.
pub const METADATA_CALL_BUDGET: Duration = Duration::from_secs(5);

/// The most pool slots [`server_pool_slots`] asks for: 4 memories of ~4 GiB of address space
/// each per slot is 16 TiB at this size, well inside x86-64's and aarch64's 128 TiB.
pub const MAX_POOL_SLOTS: u32 = 1024;

/// Pool slots for a server whose tasks each run on up to `concurrency` workers at once: room
/// for two tasks ticking together plus `describe`/`validate-config` calls. `None` (use the
/// on-demand allocator) when that exceeds [`MAX_POOL_SLOTS`]: a pool must never be what limits
/// the configured concurrency.
pub fn server_pool_slots(concurrency: usize) -> Option<u32> {
    let slots = concurrency.checked_mul(2)?.checked_add(16)?;
    u32::try_from(slots).ok().filter(|&n| n <= MAX_POOL_SLOTS)
}

/// How plugins are compiled to native code: a trade between load time (every new plugin
/// version, every cold start) and the speed of the guest's own code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompileMode {
    /// Cranelift without its optimisation passes (`OptLevel::None`): compiles ~20 % faster;
    /// guest code runs a little slower, which task plugins (glue around host calls, microseconds
    /// of their own code per run) do not notice. The default.
    #[default]
    Fast,
    /// Cranelift's optimising pipeline (`OptLevel::Speed`, wasmtime's default): for plugins
    /// that compute a lot themselves.
    Optimized,
}

/// Limits applied to every store, and how plugins are compiled; fixed for the runtime's
/// lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeLimits {
    /// Linear memory a run may use, all memories together.
    pub memory_bytes: u64,
    /// Cap on each host call (the guest may ask for less).
    pub call_timeout: Duration,
    /// How plugins are compiled (part of the compile cache's key).
    pub compile: CompileMode,
}

impl Default for RuntimeLimits {
    fn default() -> Self {
        RuntimeLimits {
            memory_bytes: 256 << 20,
            call_timeout: Duration::from_secs(60),
            compile: CompileMode::Fast,
        }
    }
}

/// The shared wasmtime engine, linker and limits. Cheap to share behind an `Arc`.
pub struct Runtime {
    engine: Engine,
    linker: Linker<RunState>,
    limits: RuntimeLimits,
    /// With the pooling allocator: one permit per pool slot, held by every live store.
    slots: Option<(Arc<tokio::sync::Semaphore>, u32)>,
    cache: Option<CompileCache>,
    stats: CompileStats,
    /// Where host calls are counted, if anywhere.
    metrics: Option<Metrics>,
    _ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Runtime {
    /// Builds the engine (component model, epoch interruption, cranelift) and the linker
    /// with WASI p2 and the `quarry:task/host` interface.
    pub fn new(limits: RuntimeLimits) -> anyhow::Result<Self> {
        Self::build(limits, None)
    }

    /// Like [`Runtime::new`], with wasmtime's pooling allocator: instances, memories, tables
    /// and fiber stacks for `slots` simultaneous stores (runs, `describe`, `validate-config`)
    /// are reserved up front and reused, which roughly halves the cost of a run (no
    /// `mmap`/`munmap` and fewer page faults per run) at the cost of reserved virtual address
    /// space (a few GiB per slot, nothing resident). A store beyond `slots` waits for a free
    /// slot before its deadline starts, so the pool never runs out. Each run's memory is also
    /// capped by the slot size (`limits.memory_bytes`).
    ///
    /// Fails when the address space cannot be reserved (e.g. under `ulimit -v`); see
    /// [`Runtime::for_server`] for the fallback.
    pub fn new_pooled(limits: RuntimeLimits, slots: u32) -> anyhow::Result<Self> {
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        let runs = slots.max(1);
        // A Rust component has 1 core instance and 1 memory; a componentize-py one has 14 core
        // instances and a few memories. Instances beyond these per-slot budgets fail to
        // instantiate with wasmtime's message, which names the limit.
        pool.total_component_instances(runs)
            .total_core_instances(runs.saturating_mul(32))
            .total_memories(runs.saturating_mul(4))
            .total_tables(runs.saturating_mul(32))
            .total_stacks(runs)
            .max_core_instances_per_component(32)
            .max_memories_per_component(8)
            .max_tables_per_component(32)
            .max_memory_size(usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX));
        Self::build(limits, Some((pool, runs)))
    }

    /// The runtime `quarry serve` uses for tasks that each run on up to `concurrency` workers
    /// at once: pooled ([`server_pool_slots`]) when the pool fits and its address space can be
    /// reserved, else on-demand, with the reason (for a warning). Both behave the same; the
    /// pooled one is cheaper per run.
    pub fn for_server(
        limits: RuntimeLimits,
        concurrency: usize,
    ) -> anyhow::Result<(Self, Option<String>)> {
        let Some(slots) = server_pool_slots(concurrency) else {
            let why = format!(
                "concurrency {concurrency} needs more than {MAX_POOL_SLOTS} instance pool slots"
            );
            return Self::new(limits).map(|rt| (rt, Some(why)));
        };
        match Self::new_pooled(limits, slots) {
            Ok(rt) => Ok((rt, None)),
            Err(e) => {
                let why = format!("reserving {slots} instance pool slots failed: {e:#}");
                Self::new(limits).map(|rt| (rt, Some(why)))
            }
        }
    }

    /// Whether this runtime uses the pooling allocator, and with how many slots.
    pub fn pool_slots(&self) -> Option<u32> {
        self.slots.as_ref().map(|(_, n)| *n)
    }

    fn build(
        limits: RuntimeLimits,
        pool: Option<(wasmtime::PoolingAllocationConfig, u32)>,
    ) -> anyhow::Result<Self> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // Never the single-pass register allocator: wasmtime does not consider it
        // production-ready for untrusted code.
        config.cranelift_opt_level(match limits.compile {
            CompileMode::Fast => wasmtime::OptLevel::None,
            CompileMode::Optimized => wasmtime::OptLevel::Speed,
        });
        let mut slots = None;
        if let Some((pool, n)) = pool {
            config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
            slots = Some((Arc::new(tokio::sync::Semaphore::new(n as usize)), n));
        }
        let engine = Engine::new(&config)
            .map_err(anyhow::Error::from)
            .context("creating the wasmtime engine")?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI p2")?;
        bindings::host::add_to_linker::<RunState, HasSelf<RunState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("linking quarry:task/host")?;
        let ticker = EpochTicker::start(&engine);
        Ok(Runtime {
            engine,
            linker,
            limits,
            slots,
            cache: None,
            stats: CompileStats::default(),
            metrics: None,
            _ticker: ticker,
        })
    }

    /// Uses an on-disk compile cache in `dir`.
    pub fn with_compile_cache(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.cache = Some(CompileCache::new(dir));
        self
    }

    /// Counts every host call of every run (kind, error kind, duration) in `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The metrics host calls are counted in, if any.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// Compilation counters (compiled, cache hits, rejected entries).
    pub fn compile_stats(&self) -> &CompileStats {
        &self.stats
    }

    /// Compiles component bytes, or loads them from the compile cache. Blocking (CPU-bound):
    /// call it from a blocking thread.
    pub(crate) fn compile(
        &self,
        bytes: &[u8],
        sha256: &str,
    ) -> wasmtime::Result<wasmtime::component::Component> {
        if let Some(cache) = &self.cache
            && let Some(component) = cache.load(&self.engine, sha256, &self.stats)
        {
            return Ok(component);
        }
        let component = wasmtime::component::Component::new(&self.engine, bytes)?;
        self.stats
            .compiled
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(cache) = &self.cache {
            cache.store(&self.engine, sha256, &component);
        }
        Ok(component)
    }

    /// The limits every run gets.
    pub fn limits(&self) -> RuntimeLimits {
        self.limits
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn linker(&self) -> &Linker<RunState> {
        &self.linker
    }

    /// A pool slot for one store (waits while all are in use); `None` without a pool. Hold it
    /// until the store is dropped: declare it before the store.
    async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let (sem, _) = self.slots.as_ref()?;
        // The semaphore is never closed.
        sem.clone().acquire_owned().await.ok()
    }

    /// A fresh store for one call sequence, ending at `deadline`.
    fn store(&self, ctx: CallContext, deadline: Instant) -> Store<RunState> {
        self.store_with(ctx, deadline, Arc::new(RunPolicy::default()))
    }

    /// Like [`Runtime::store`], with the policy host calls are checked against.
    fn store_with(
        &self,
        ctx: CallContext,
        deadline: Instant,
        policy: Arc<RunPolicy>,
    ) -> Store<RunState> {
        let stderr = GuestStderr::default();
        let mut wasi = WasiCtx::builder();
        // Explicit even where it is the default: no network, no name lookup, no files.
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .stderr(stderr.clone());
        let state = RunState {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: self.limits.memory_bytes,
                used: 0,
                exceeded: false,
            },
            stderr,
            ctx,
            call_timeout: self.limits.call_timeout,
            deadline,
            log_lines: 0,
            quiet: false,
            metrics: self.metrics.clone(),
            policy,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Runs `plugin` once against `worker` with `params` (a JSON object), within `budget`,
    /// under the default [`RunPolicy`] (no grants beyond the plugin's own, which are not
    /// applied here; protected paths; not a dry run). See [`Runtime::run_with`].
    pub async fn run(
        &self,
        plugin: &Plugin,
        task: &str,
        worker: Worker,
        params: &str,
        budget: Duration,
        previous_pid: Option<u32>,
    ) -> Result<RunOutcome, RunError> {
        let policy = Arc::new(RunPolicy::default());
        (self.run_with(plugin, task, worker, params, budget, previous_pid, policy)).await
    }

    /// Runs `plugin` once against `worker` with `params` (a JSON object), within `budget`;
    /// every host call is checked against `policy` before it reaches the worker.
    ///
    /// Strategy: a fresh store whose epoch callback traps at the deadline (busy guests), the
    /// whole call wrapped in a tokio timeout slightly past the deadline (guests stuck in a host
    /// call), and the memory limiter's flag to tell an out-of-memory trap from others.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_with(
        &self,
        plugin: &Plugin,
        task: &str,
        worker: Worker,
        params: &str,
        budget: Duration,
        previous_pid: Option<u32>,
        policy: Arc<RunPolicy>,
    ) -> Result<RunOutcome, RunError> {
        let _slot = self.slot().await;
        let deadline = Instant::now() + budget;
        let ctx = CallContext::Run {
            task: task.to_string(),
            worker,
            previous_pid,
        };
        let mut store = self.store_with(ctx, deadline, policy);
        let call = async {
            let instance = plugin.pre().instantiate_async(&mut store).await?;
            let guest = plugin.task().load(&mut store, &instance)?;
            guest.call_run(&mut store, params).await
        };
        let result = tokio::time::timeout_at((deadline + DEADLINE_GRACE).into(), call).await;
        let secs = budget.as_secs_f64();
        match result {
            Err(_elapsed) => Err(RunError::Deadline { secs }),
            Ok(Err(trap)) => Err(classify_trap(&store, trap, secs)),
            Ok(Ok(Err(message))) => Err(RunError::Task(message)),
            Ok(Ok(Ok(outcome))) => convert::outcome(outcome).map_err(RunError::InvalidResult),
        }
    }

    /// Calls `describe` and checks the answer. Used when a plugin loads.
    pub(crate) async fn describe(
        &self,
        pre: &wasmtime::component::InstancePre<RunState>,
        task: &bindings::TaskIndices,
    ) -> Result<crate::task::TaskMeta, String> {
        let _slot = self.slot().await;
        let deadline = Instant::now() + METADATA_CALL_BUDGET;
        let mut store = self.store(CallContext::Metadata, deadline);
        let call = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let guest = task.load(&mut store, &instance)?;
            guest.call_describe(&mut store).await
        };
        match tokio::time::timeout_at((deadline + DEADLINE_GRACE).into(), call).await {
            Err(_) => Err("describe did not return within its deadline".into()),
            Ok(Err(trap)) => Err(format!(
                "describe failed: {}",
                classify_trap(&store, trap, METADATA_CALL_BUDGET.as_secs_f64())
            )),
            Ok(Ok(meta)) => convert::metadata(meta),
        }
    }

    /// Calls `validate-config` with `params`. `Ok(Err(msg))` is the task's verdict;
    /// `Err` means the call itself failed (trap, deadline).
    pub async fn validate_config(
        &self,
        plugin: &Plugin,
        params: &str,
    ) -> Result<Result<(), String>, RunError> {
        let _slot = self.slot().await;
        let deadline = Instant::now() + METADATA_CALL_BUDGET;
        let mut store = self.store(CallContext::Metadata, deadline);
        let call = async {
            let instance = plugin.pre().instantiate_async(&mut store).await?;
            let guest = plugin.task().load(&mut store, &instance)?;
            guest.call_validate_config(&mut store, params).await
        };
        let secs = METADATA_CALL_BUDGET.as_secs_f64();
        match tokio::time::timeout_at((deadline + DEADLINE_GRACE).into(), call).await {
            Err(_) => Err(RunError::Deadline { secs }),
            Ok(Err(trap)) => Err(classify_trap(&store, trap, secs)),
            Ok(Ok(verdict)) => Ok(verdict),
        }
    }

    /// Asks `plugin` which grants it needs for `params` (`capabilities.requires`).
    /// A plugin without that export, or whose answer is the error `undeclared`, is
    /// [`Declared::Undeclared`]. `Ok(Err(msg))` is the task's refusal of the params; `Err`
    /// means the call itself failed (trap, deadline).
    pub async fn requires(
        &self,
        plugin: &Plugin,
        params: &str,
    ) -> Result<Result<Declared, String>, RunError> {
        let Some(capabilities) = plugin.capabilities() else {
            return Ok(Ok(Declared::Undeclared));
        };
        if let Some(known) = plugin.declared(params) {
            return Ok(Ok(known));
        }
        let _slot = self.slot().await;
        let deadline = Instant::now() + METADATA_CALL_BUDGET;
        let mut store = self.store(CallContext::Metadata, deadline);
        // `requires` repeats the params check whose log lines `validate-config` already
        // emitted (warnings about the params): they are not logged twice.
        store.data_mut().quiet = true;
        let call = async {
            let instance = plugin.pre().instantiate_async(&mut store).await?;
            let guest = capabilities.load(&mut store, &instance)?;
            guest.call_requires(&mut store, params).await
        };
        let secs = METADATA_CALL_BUDGET.as_secs_f64();
        match tokio::time::timeout_at((deadline + DEADLINE_GRACE).into(), call).await {
            Err(_) => Err(RunError::Deadline { secs }),
            Ok(Err(trap)) => Err(classify_trap(&store, trap, secs)),
            Ok(Ok(Err(msg))) if msg == crate::grants::UNDECLARED => {
                plugin.remember(params, &Declared::Undeclared);
                Ok(Ok(Declared::Undeclared))
            }
            Ok(Ok(Err(msg))) => Ok(Err(msg)),
            Ok(Ok(Ok(grants))) => {
                let declared = Declared::Grants(convert::grants(grants));
                plugin.remember(params, &declared);
                Ok(Ok(declared))
            }
        }
    }
}

/// SHA-256 of `bytes`, lower-case hex: how plugin files are identified.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Turns a wasmtime error from a guest call into a [`RunError`], with the guest's stderr
/// (panic message) appended when there is one.
fn classify_trap(store: &Store<RunState>, err: wasmtime::Error, secs: f64) -> RunError {
    let state = store.data();
    let stderr = state.stderr.tail();
    let mut detail = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{err:#}"),
    };
    if !stderr.is_empty() {
        detail.push_str(&format!(" (guest stderr: {stderr})"));
    }
    if state.limiter.exceeded {
        return RunError::Memory {
            mib: state.limiter.limit >> 20,
            detail,
        };
    }
    if matches!(
        err.downcast_ref::<wasmtime::Trap>(),
        Some(wasmtime::Trap::Interrupt)
    ) {
        return RunError::Deadline { secs };
    }
    RunError::Trap(detail)
}

/// What a store is for: a real run on a worker, or a metadata call that must not reach one.
pub(crate) enum CallContext {
    /// `describe` / `validate-config`: host calls are refused.
    Metadata,
    /// A run of `task` on `worker`.
    Run {
        /// Task name, for logs.
        task: String,
        /// The target.
        worker: Worker,
        /// The live process the task's previous run on this worker reported.
        previous_pid: Option<u32>,
    },
}

/// Per-store state. Owned by one store, dropped with it at the end of the run.
pub(crate) struct RunState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    stderr: GuestStderr,
    pub(crate) ctx: CallContext,
    pub(crate) call_timeout: Duration,
    pub(crate) deadline: Instant,
    pub(crate) log_lines: u32,
    /// Guest log lines are dropped (during `requires`).
    pub(crate) quiet: bool,
    /// Where this run's host calls are counted, if anywhere.
    pub(crate) metrics: Option<Metrics>,
    /// What every host call is checked against (grants, protected paths, dry run).
    pub(crate) policy: Arc<RunPolicy>,
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Limits the total linear memory of a store and remembers whether it refused a growth.
struct MemoryLimiter {
    limit: u64,
    used: u64,
    exceeded: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grow = (desired as u64).saturating_sub(current as u64);
        if self.used.saturating_add(grow) > self.limit {
            self.exceeded = true;
            return Ok(false);
        }
        self.used += grow;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold references; 1M entries is far beyond any task's need.
        Ok(desired <= 1 << 20)
    }
}

/// A guest's stderr: the first [`GUEST_STDERR_CAP_BYTES`] are kept, the rest dropped
/// silently (a chatty guest must not trap because of it).
#[derive(Clone, Default)]
struct GuestStderr(Arc<Mutex<Vec<u8>>>);

impl GuestStderr {
    /// The captured text, trimmed, as one line-joined string (at most the cap).
    fn tail(&self) -> String {
        let buf = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&buf)
            .trim()
            .lines()
            .collect::<Vec<_>>()
            .join(" | ")
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for GuestStderr {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Ok(mut kept) = self.0.lock() {
            let room = GUEST_STDERR_CAP_BYTES.saturating_sub(kept.len());
            kept.extend_from_slice(&buf[..buf.len().min(room)]);
        }
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`]; it stops on its own once
/// the engine is dropped (it holds only a weak reference).
struct EpochTicker;

impl EpochTicker {
    fn start(engine: &Engine) -> Self {
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("quarry-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .expect("spawning the epoch ticker thread");
        EpochTicker
    }
}
