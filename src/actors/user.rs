//! The user actor: the only writer of one user's state.
//!
//! Each handler copies the state, lets a `domain` rule change the copy, writes the copy's
//! snapshot, and only then makes it the actor's state and publishes it to readers. A snapshot the
//! store refuses leaves the actor exactly as it was, so memory never runs ahead of disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, ActorContext, AsyncContext, Context, Handler};
use tracing::debug;

use super::directory::{Inner, ViewEntry};
use super::messages::{
    ActorError, Done, Logout, OpenSession, Opened, Refresh, Refreshed, Reply, Subject,
};
use crate::clock;
use crate::domain::error::DomainError;
use crate::domain::time::Timestamp;
use crate::domain::user::UserState;
use crate::store::IndexChange;

pub struct UserActor {
    state: Arc<UserState>,
    /// Seconds (on the directory's clock) of the last read or write; shared with the view.
    activity: Arc<AtomicU64>,
    dir: Arc<Inner>,
    /// Set once the actor has left the directory; it then refuses every message.
    retired: bool,
}

impl UserActor {
    pub(crate) fn new(state: Arc<UserState>, activity: Arc<AtomicU64>, dir: Arc<Inner>) -> Self {
        Self {
            state,
            activity,
            dir,
            retired: false,
        }
    }

    fn subject(&self) -> Subject {
        Subject {
            tenant: self.state.tenant.id,
            role: self.state.role.as_str(),
        }
    }

    /// Runs `rule` on a copy of the state; persists and publishes the copy if it changed.
    fn apply<T>(
        &mut self,
        index: impl FnOnce(&UserState, &UserState) -> Vec<IndexChange>,
        rule: impl FnOnce(&mut UserState, Timestamp) -> Result<T, DomainError>,
    ) -> Reply<T> {
        if self.retired {
            return Err(ActorError::Retired);
        }
        self.activity
            .store(self.dir.uptime_secs(), Ordering::Relaxed);
        let mut next = (*self.state).clone();
        let value = rule(&mut next, clock::now());
        if next.revision == self.state.revision {
            return Ok(Done {
                value,
                ticket: None,
            });
        }
        let changes = index(&self.state, &next);
        let ticket = self.dir.store.save_user(&next, &changes)?;
        self.state = Arc::new(next);
        self.dir.views.insert(
            self.state.id,
            ViewEntry {
                state: self.state.clone(),
                activity: self.activity.clone(),
            },
        );
        Ok(Done {
            value,
            ticket: Some(ticket),
        })
    }

    fn no_index(_: &UserState, _: &UserState) -> Vec<IndexChange> {
        Vec::new()
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let idle = self.dir.config.idle;
        let every = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
        ctx.run_interval(every, move |act, ctx| {
            let last = act.activity.load(Ordering::Relaxed);
            if act.dir.uptime_secs().saturating_sub(last) >= idle.as_secs() {
                act.retire(ctx);
            }
        });
    }
}

impl UserActor {
    /// Leaves the directory and stops. Messages already queued get `Retired` and are retried
    /// by the directory on a fresh actor.
    fn retire(&mut self, ctx: &mut Context<Self>) {
        self.retired = true;
        let me = ctx.address();
        let id = self.state.id;
        self.dir.actors.remove_if(&id, |_, a| *a == me);
        let mine = self.state.clone();
        self.dir
            .views
            .remove_if(&id, |_, v| Arc::ptr_eq(&v.state, &mine));
        debug!(user = %id, "user actor retired after idling");
        ctx.stop();
    }
}

impl Handler<OpenSession> for UserActor {
    type Result = Reply<Opened>;

    fn handle(&mut self, _: OpenSession, _: &mut Context<Self>) -> Self::Result {
        let policy = self.dir.config.policy;
        let subject = self.subject();
        self.apply(Self::no_index, |s, now| {
            let (session, refresh, refresh_expires_at) =
                s.open_session(crate::domain::secrets::random_32(), &policy, now)?;
            Ok(Opened {
                session,
                refresh,
                refresh_expires_at,
                subject,
            })
        })
    }
}

impl Handler<Refresh> for UserActor {
    type Result = Reply<Refreshed>;

    fn handle(&mut self, msg: Refresh, _: &mut Context<Self>) -> Self::Result {
        let policy = self.dir.config.policy;
        let key = self.dir.key.clone();
        let subject = self.subject();
        self.apply(Self::no_index, |s, now| {
            let grant = s.refresh(&msg.token, &key, &policy, now)?;
            Ok(Refreshed { grant, subject })
        })
    }
}

impl Handler<Logout> for UserActor {
    type Result = Reply<()>;

    fn handle(&mut self, msg: Logout, _: &mut Context<Self>) -> Self::Result {
        let key = self.dir.key.clone();
        self.apply(Self::no_index, |s, _| {
            s.logout(msg.session, msg.refresh.as_ref(), msg.everywhere, &key);
            Ok(())
        })
    }
}
