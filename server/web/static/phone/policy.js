// The check-in policy of a station (edge/policy.py decide_checkin), for the phone: a pure
// function of the person's last check-in here, now, and the settings the server pushed.
// Times are {wall, mono, boot} in milliseconds: monotonic time compares within one page
// load (the phone's "boot"), the wall clock across them.

export function policyFrom(config) {
  return {
    mode: config.mode,
    repeatWindowMs: config.repeat_window_s * 1000,
    toggleResetMs: config.auto_checkout_s * 1000,
    antiPassback: Boolean(config.anti_passback),
  };
}

function since(now, earlier) {
  return earlier.boot === now.boot ? now.mono - earlier.mono : now.wall - earlier.wall;
}

// {accepted, code, direction}: code is "accepted", "already_counted", "blocked" or "passback".
export function decideCheckin(last, now, policy, blocked = false) {
  if (blocked) return { accepted: false, code: "blocked", direction: "" };
  if (last) {
    // A negative gap (a clock put back) counts as inside the window: never count twice.
    if (since(now, last) < policy.repeatWindowMs) {
      return { accepted: false, code: "already_counted", direction: last.dir };
    }
  }
  const stillIn = Boolean(last) && since(now, last) < policy.toggleResetMs;
  let direction;
  if (policy.mode === "entry") {
    if (policy.antiPassback && stillIn && last.dir === "in") return { accepted: false, code: "passback", direction: "in" };
    direction = "in";
  } else if (policy.mode === "exit") {
    if (policy.antiPassback && last && last.dir === "out") return { accepted: false, code: "passback", direction: "out" };
    direction = "out";
  } else {
    direction = stillIn && last.dir === "in" ? "out" : "in";
  }
  return { accepted: true, code: "accepted", direction };
}
