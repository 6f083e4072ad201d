//! The tutorials' producer/consumer, with async workers: cooks and eaters are tokio tasks of
//! one process sharing one [`AsyncClient`] connection, beside cooks that are worker processes
//! with the blocking client. The queue decouples them all; the parent closes it once every
//! cook is done, and each eater stops when it finds the queue closed and drained.
//!
//! ```text
//! cargo run --example async_producer_consumer
//! ```
//!
//! A parked `get` parks only its task: the runtime's two threads serve every other task
//! meanwhile. Every dish eaten is recorded in a manager list; the invariant, checked before
//! exiting 0, is that every dish cooked was eaten exactly once.

use std::error::Error;
use std::process::ExitCode;
use std::time::Duration;

use agora::aio::AsyncClient;
use agora::{ErrorName, Manager, Process};

// The tutorials' program, for its meal and the meal's invariant: this is its `close` variant.
#[path = "producer_consumer.rs"]
#[allow(dead_code)]
mod producer_consumer;

use producer_consumer::{Meal, Variant};

const DISHES_PER_COOK: usize = 4;

/// Cooks `food` in a worker process with the blocking client; call it before the runtime
/// starts (fork copies only the calling thread).
pub fn cook_in_a_process(manager: &Manager, food: &'static str) -> Result<Process, Box<dyn Error>> {
    let dishes = manager.queue_named::<String>("dishes", 0)?;
    let cooked = manager.list_named::<String>("cooked")?;
    let cook = Process::spawn_fallible(move || -> agora::Result<()> {
        for i in 0..DISHES_PER_COOK {
            let dish = format!("{food} {i}");
            cooked.append(&dish)?;
            dishes.put(&dish)?;
        }
        Ok(())
    })?;
    Ok(cook)
}

/// Runs the async cooks and eaters on `client`, waits for the worker processes `cooks`, and
/// returns the meal.
pub async fn run(client: &AsyncClient, cooks: Vec<Process>) -> Result<Meal, Box<dyn Error>> {
    let dishes = client
        .object(|c| c.queue_named::<String>("dishes", 0))
        .await?;
    let cooked = client.object(|c| c.list_named::<String>("cooked")).await?;
    let eaten = client
        .object(|c| c.list_named::<(usize, String)>("eaten"))
        .await?;

    let mut eaters = tokio::task::JoinSet::new();
    for who in 0..3 {
        let (dishes, eaten) = (dishes.clone(), eaten.clone());
        eaters.spawn(async move {
            loop {
                match dishes.get().await {
                    Ok(dish) => {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        println!("eater {who} ate {dish}");
                        eaten.append(&(who, dish)).await?;
                    }
                    // Closed and drained: the meal is over.
                    Err(e) if e.is(ErrorName::Closed) => return Ok::<(), agora::Error>(()),
                    Err(e) => return Err(e),
                }
            }
        });
    }
    let mut async_cooks = tokio::task::JoinSet::new();
    for food in ["bun", "dumpling"] {
        let (dishes, cooked) = (dishes.clone(), cooked.clone());
        async_cooks.spawn(async move {
            for i in 0..DISHES_PER_COOK {
                let dish = format!("{food} (async) {i}");
                cooked.append(&dish).await?;
                dishes.put(&dish).await?;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            Ok::<(), agora::Error>(())
        });
    }
    while let Some(done) = async_cooks.join_next().await {
        done??;
    }
    // The worker processes are joined on a blocking thread: the runtime keeps serving.
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        for mut p in cooks {
            let status = p.join().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("a cook process failed: {status}"));
            }
        }
        Ok(())
    })
    .await??;
    dishes.close().await?;
    while let Some(done) = eaters.join_next().await {
        done??;
    }
    Ok(Meal {
        variant: Variant::Close,
        cooked: cooked.copy().await?,
        eaten: eaten.copy().await?,
    })
}

fn main() -> ExitCode {
    agora::run_manager_if_requested();
    let outcome = (|| -> Result<Meal, Box<dyn Error>> {
        // Started by executing this program again: the runtime below must not be forked.
        let manager = Manager::builder().reexec().spawn()?;
        let cooks = vec![cook_in_a_process(&manager, "noodles")?];
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let client = AsyncClient::from_client(manager.client().clone()).await?;
            run(&client, cooks).await
        })
    })();
    match outcome.and_then(|meal| Ok(meal.check()?)) {
        Ok(()) => {
            println!("every dish cooked was eaten exactly once");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("async_producer_consumer: {e}");
            ExitCode::FAILURE
        }
    }
}
