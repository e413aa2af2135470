// The lifetime of the page on screen: polls, pending fetches and clean-ups all end when the
// router leaves the page, so a page never updates (or leaks) after it is gone.

import { isAbort } from './api.js';

/** How often live pages refresh. */
export const OVERVIEW_MS = 3000;
export const LIVE_MS = 5000;

let scope = newScope();

function newScope() {
  return { controller: new AbortController(), cleanups: [] };
}

/** Ends the current page: aborts its fetches, stops its polls, runs its clean-ups. */
export function leavePage() {
  const ended = scope;
  scope = newScope();
  ended.controller.abort();
  for (const cleanup of ended.cleanups) {
    try {
      cleanup();
    } catch (err) {
      console.error('clean-up failed', err);
    }
  }
}

/** Runs `cleanup` when the page is left (destroy a chart, drop a listener). */
export function onLeave(cleanup) {
  scope.cleanups.push(cleanup);
}

/** Aborts when the page is left: pass it to fetches. */
export function pageSignal() {
  return scope.controller.signal;
}

/**
 * Calls `fn(signal)` now, then `ms` after each call settles (calls never overlap), until the
 * page is left or `stop()` is called. `now()` runs it at once (after an action changed things).
 * `fn` reports its own errors (a panel's `run` does); anything thrown is only logged.
 */
export function poll(fn, ms) {
  const { signal } = scope.controller;
  let timer = null;
  let stopped = false;
  let running = false;
  const tick = async () => {
    clearTimeout(timer);
    if (stopped || signal.aborted || running) return;
    running = true;
    try {
      await fn(signal);
    } catch (err) {
      if (!isAbort(err)) console.error('poll failed', err);
    } finally {
      running = false;
    }
    if (!stopped && !signal.aborted) timer = setTimeout(tick, ms);
  };
  const stop = () => {
    stopped = true;
    clearTimeout(timer);
  };
  signal.addEventListener('abort', stop, { once: true });
  tick();
  return { stop, now: tick };
}
