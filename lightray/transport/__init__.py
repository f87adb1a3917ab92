"""The message layer between lightray processes.

    messages   the op codes of every message and their one-frame encoding
    sockets    ZeroMQ sockets built with lightray's settings, the agent's ipc address
    keys       the cluster key file (CURVE pair + secret) and the stream key derived from it
    mesh       the agents' peer mesh: one ROUTER per agent, one DEALER per peer
    handshakes the mesh's refused CURVE handshakes (socket monitors), in words
    peer_watch is a peer's process gone? its refused reconnects (a DEALER's monitor)
    stream     the stream sockets (caller -> leased worker or actor): handshakes, connections
    stream_frames  their frames: FrameReader (seal check, decryption), OutBuffer (queued writes)
    stream_cipher  the encryption of TCP stream frames between hosts (a SHAKE-256 keystream)
    stream_proof  the stream sockets' key handshake and the seals of TCP frames
    guard      rate-limited reports of refused peers and malformed messages

May import: nothing of lightray outside this package (mesh uses messages);
the agent, the client and the workers sit above it. This __init__ imports nothing.
"""
