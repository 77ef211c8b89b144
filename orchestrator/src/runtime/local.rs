//! Services on this machine: the handle is `command_executor::service::local`'s, which spawns,
//! follows, signals and sweeps them.

use std::time::Duration;

use command_executor::Signal;
use command_executor::service::ExitInfo;
use command_executor::service::local::LocalService;
use futures_util::future::BoxFuture;

use super::{LaunchError, ServiceProcess};

impl ServiceProcess for LocalService {
    fn pid(&self) -> u32 {
        self.pid
    }

    fn start_time(&self) -> u64 {
        self.start_time
    }

    fn local_session(&self) -> Option<u32> {
        Some(self.pid)
    }

    fn wait(&mut self) -> BoxFuture<'_, ExitInfo> {
        Box::pin(LocalService::wait(self))
    }

    fn terminate(
        &mut self,
        signal: Signal,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<(ExitInfo, bool), LaunchError>> {
        Box::pin(async move { Ok(LocalService::terminate(self, signal, timeout).await) })
    }

    fn sweep(&self) -> BoxFuture<'_, Result<(), LaunchError>> {
        Box::pin(async move {
            LocalService::sweep(self, Vec::new()).await;
            Ok(())
        })
    }
}
