-- wrk script: every request carries the cookie of one of the seeded
-- sessions, picked at random; WRITE_PCT percent are POST /counter (an
-- increment), the rest GET /counter (a read).
local ids = {}
for line in io.lines(os.getenv("IDS") or "ids.txt") do
  ids[#ids + 1] = line
end
local write_pct = tonumber(os.getenv("WRITE_PCT") or "20")
math.randomseed(os.time() + math.floor(os.clock() * 1e6))

request = function()
  local id = ids[math.random(#ids)]
  local method = "GET"
  if math.random(100) <= write_pct then method = "POST" end
  return wrk.format(method, "/counter", { ["Cookie"] = "id=" .. id })
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %.0f %.3f %.3f %d %d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
