-- sockmsg.lua - a Wireshark dissector for libsockmsg's wire format
-- (docs/PROTOCOL.md): on a TCP stream, frames of a 4-byte unsigned
-- big-endian length N and then N bytes of payload.
--
--   wireshark -X lua_script:tools/wireshark/sockmsg.lua capture.pcap
--   tshark -X lua_script:tools/wireshark/sockmsg.lua -i lo -f 'tcp port 29876'
--
-- or copy the file into Wireshark's personal Lua plugins folder
-- (~/.local/lib/wireshark/plugins/) to have it always.
--
-- It decodes the TCP port set in the preferences (Protocols > SOCKMSG >
-- TCP port, or -o sockmsg.port:7000 on the command line; 29876, the
-- tutorial's port, by default); for more ports use Decode As (tshark:
-- -d tcp.port==7000,sockmsg).  A frame split across TCP segments is
-- reassembled and shown in the segment that completes it; several frames
-- in one segment are each shown.  A header announcing more than the
-- maximum frame (preference max_frame, 16 MiB by default, as libsockmsg's)
-- is flagged as an error, and since a receiver closes the connection
-- there, the rest of that direction of the stream is shown as unframed.
--
-- Fields, for display filters and tshark -e:
--   sockmsg.length    the length in a frame's header
--   sockmsg.payload   the payload's bytes
--   sockmsg.text      the payload as text, when it is short printable text
--   sockmsg.unframed  bytes after an oversized header (not decoded)
-- Expert infos: sockmsg.too_big (error), sockmsg.after_too_big (note).

local sockmsg = Proto("sockmsg", "libsockmsg framed messages")

local HEADER_LEN = 4
local DEFAULT_PORT = 29876
local DEFAULT_MAX = 16 * 1024 * 1024 -- libsockmsg's default max_frame
local TEXT_MAX = 256                 -- longest payload also shown as text

local f_length = ProtoField.uint32("sockmsg.length", "Length", base.DEC)
local f_payload = ProtoField.bytes("sockmsg.payload", "Payload")
local f_text = ProtoField.string("sockmsg.text", "Text")
local f_unframed = ProtoField.bytes("sockmsg.unframed", "Unframed data")
sockmsg.fields = { f_length, f_payload, f_text, f_unframed }

local e_too_big = ProtoExpert.new("sockmsg.too_big", "Length over the maximum frame",
                                  expert.group.MALFORMED, expert.severity.ERROR)
local e_after = ProtoExpert.new("sockmsg.after_too_big",
                                "Data after an oversized header: the receiver has closed",
                                expert.group.SEQUENCE, expert.severity.NOTE)
sockmsg.experts = { e_too_big, e_after }

sockmsg.prefs.port = Pref.uint("TCP port", DEFAULT_PORT,
                               "The TCP port decoded as sockmsg (0: none; Decode As adds others)")
sockmsg.prefs.max_frame = Pref.uint("Maximum frame", DEFAULT_MAX,
                                    "The largest payload a receiver accepts (libsockmsg's max_frame); "
                                    .. "a header announcing more is an error")

local f_tcp_stream = Field.new("tcp.stream")

-- Where a header over the maximum was seen: the frame number, per TCP
-- stream and direction.  Later data in that direction is not framed.
local broken = {}

function sockmsg.init()
    broken = {}
end

local function direction_key(pinfo)
    local stream = f_tcp_stream()
    return tostring(stream and stream.value or "?") .. "/" .. tostring(pinfo.src) .. ":"
        .. tostring(pinfo.src_port)
end

-- Short payloads of printable ASCII (tab, newline and carriage return
-- allowed) are also shown as text.
local function printable(range)
    local len = range:len()
    if len == 0 or len > TEXT_MAX then
        return false
    end
    local bytes = range:bytes()
    for i = 0, len - 1 do
        local b = bytes:get_index(i)
        if (b < 0x20 and b ~= 9 and b ~= 10 and b ~= 13) or b >= 0x7f then
            return false
        end
    end
    return true
end

function sockmsg.dissector(tvb, pinfo, tree)
    local total = tvb:len()
    if total == 0 then
        return 0
    end
    pinfo.cols.protocol = "SOCKMSG"
    local key = direction_key(pinfo)
    local bad = broken[key]
    if bad and pinfo.number > bad then
        local item = tree:add(sockmsg, tvb(), "sockmsg, unframed")
        item:add(f_unframed, tvb())
        item:add_proto_expert_info(e_after)
        pinfo.cols.info = string.format("Unframed data after an oversized header (frame %d)", bad)
        return total
    end

    local max = sockmsg.prefs.max_frame
    local offset = 0
    local info = {}     -- "len=N" for each message
    local oversized = nil -- the info text for a header over the maximum
    while offset < total do
        local avail = total - offset
        if avail < HEADER_LEN then
            -- Part of a header: ask TCP for the next segment.
            pinfo.desegment_offset = offset
            pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
            break
        end
        local len = tvb(offset, HEADER_LEN):uint()
        if len > max then
            local item = tree:add(sockmsg, tvb(offset), "sockmsg, oversized header")
            local litem = item:add(f_length, tvb(offset, HEADER_LEN))
            litem:add_proto_expert_info(e_too_big,
                string.format("Length %d is over the maximum frame %d: the receiver closes the connection",
                              len, max))
            if avail > HEADER_LEN then
                item:add(f_unframed, tvb(offset + HEADER_LEN))
            end
            oversized = string.format("Oversized header: len=%d, maximum %d", len, max)
            if not broken[key] or broken[key] > pinfo.number then
                broken[key] = pinfo.number
            end
            offset = total
            break
        end
        if avail < HEADER_LEN + len then
            -- The frame goes on in later segments: ask for exactly the rest.
            pinfo.desegment_offset = offset
            pinfo.desegment_len = HEADER_LEN + len - avail
            break
        end
        local item = tree:add(sockmsg, tvb(offset, HEADER_LEN + len),
                              string.format("sockmsg, message of %d bytes", len))
        item:add(f_length, tvb(offset, HEADER_LEN))
        if len > 0 then -- (an empty message has no payload field)
            local payload = tvb(offset + HEADER_LEN, len)
            item:add(f_payload, payload)
            if printable(payload) then
                local text = payload:string()
                item:add(f_text, payload, text)
                item:append_text(string.format(": %q", text))
            end
        end
        info[#info + 1] = "len=" .. len
        offset = offset + HEADER_LEN + len
    end
    local text = {}
    if #info > 0 then
        text[1] = (#info == 1 and "Message " or #info .. " messages: ") .. table.concat(info, ", ")
    end
    text[#text + 1] = oversized
    if #text > 0 then
        pinfo.cols.info = table.concat(text, "; ")
    end
    return total
end

-- Registration on the preferred port, moved when the preference changes.
local tcp_port = DissectorTable.get("tcp.port")
local registered_port = 0

local function register_port()
    if registered_port ~= 0 then
        tcp_port:remove(registered_port, sockmsg)
    end
    registered_port = sockmsg.prefs.port
    if registered_port ~= 0 then
        tcp_port:add(registered_port, sockmsg)
    end
end

function sockmsg.prefs_changed()
    if sockmsg.prefs.port ~= registered_port then
        register_port()
    end
end

register_port()
-- "Decode As" lists sockmsg for any TCP port (Wireshark 2.4 and later).
pcall(function() tcp_port:add_for_decode_as(sockmsg) end)
