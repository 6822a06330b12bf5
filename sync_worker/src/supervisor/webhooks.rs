// Webhook routing: calls from the HTTP server go to the webhook executors in batches;
// their answers go back to the waiting requests.
use super::*;

impl Supervisor {
    pub(super) fn on_command(&mut self, cmd: SupervisorCommand) {
        match cmd {
            SupervisorCommand::ProcessJobs => self.wake(),
            SupervisorCommand::Webhook(call, reply) => {
                let refuse = if self.stopping.is_some() {
                    Some("the worker is stopping; send the request again")
                } else if self.queue.is_none() {
                    Some("the database is unreachable; send the request again later")
                } else {
                    None
                };
                let id = call.id;
                self.hook_calls.insert(
                    id,
                    PendingCall {
                        reply,
                        token: call.token.clone(),
                    },
                );
                match refuse {
                    Some(why) => self.answer(WebhookReply::error(id, 503, why)),
                    None => self.hook_queue.push_back(*call),
                }
            }
        }
    }

    pub(super) fn answer(&mut self, reply: WebhookReply) {
        if let Some(call) = self.hook_calls.remove(&reply.id) {
            let _ = call.reply.send(reply);
        }
    }

    /// Hand waiting webhook calls to idle webhook executors, a batch at a time each.
    pub(super) fn fill_hooks(&mut self) {
        if self.hook_queue.is_empty() {
            return;
        }
        let Some((auth, caller)) = self
            .queue
            .as_ref()
            .map(|q| (q.auth.clone(), q.caller.clone()))
        else {
            return;
        };
        for i in self.pools.webhooks.wanting() {
            if self.hook_queue.is_empty() {
                return;
            }
            let Some(p) = self.pools.webhooks.slots[i].proc.as_mut() else {
                continue;
            };
            let n = self.hook_queue.len().min(WEBHOOK_BATCH);
            let calls: Vec<WebhookCall> = self.hook_queue.drain(..n).collect();
            let batch = self.next_batch;
            self.next_batch += 1;
            p.hook_batches
                .push_back((batch, calls.iter().map(|c| c.id).collect()));
            p.send(ToExecutor::Webhooks {
                batch,
                auth: auth.clone(),
                caller: caller.clone(),
                calls,
            });
        }
    }

    /// A webhook executor's pipe closed: answer its calls (500), record them as failed
    /// jobs (their transaction died with it), start a new one.
    pub(super) fn on_hook_exit(
        &mut self,
        id: SlotId,
        mut p: ExecutorProc,
        clean: bool,
        describe: &str,
    ) {
        let i = self.pools.number(id);
        let killed_for = p.killed_for();
        if !clean && !p.killed_to_stop() && killed_for.is_none() {
            tracing::error!("webhook executor {i} (pid {}) died: {describe}", p.pid);
        }
        let worker = self.queue.as_ref().map(|q| q.worker);
        let mut failures = Vec::new();
        for (_, calls) in std::mem::take(&mut p.hook_batches) {
            for id in calls {
                let why = match &killed_for {
                    Some((culprit, why)) if *culprit as u64 == id => why.clone(),
                    Some(_) => "the webhook executor running it was stopped because another call of its batch overran its hard time limit".to_string(),
                    None if p.killed_to_stop() => {
                        "the worker stopped before the call finished".to_string()
                    }
                    None => format!("the webhook executor running it died ({describe})"),
                };
                if let (Some(call), Some(w)) = (self.hook_calls.get(&id), worker) {
                    failures.push((call.token.clone(), w, why));
                }
                self.answer(WebhookReply::error(id, 500, "the webhook handler failed"));
            }
        }
        let cleanup = Cleanup {
            backend: p.backend_pid.filter(|_| !clean),
            interrupt: None,
            webhook_failures: failures,
        };
        if self.stopping.is_some() {
            self.cleanups.push(cleanup);
        } else {
            if let Some(q) = &self.queue {
                tokio::spawn(cleanup.run(q.client.clone()));
            }
            self.pools
                .slot_mut(id)
                .schedule_respawn(&p, killed_for.is_some());
        }
    }
}
