"""portpatrol chat side: turns chat events into scan requests and reports into messages."""
